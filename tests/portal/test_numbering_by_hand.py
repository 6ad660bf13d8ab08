"""The portal's numbering by hand: document references shown and searched in the ledger, a
counter set at go-live, a number recorded from elsewhere, and a CSV import with a report per
row."""

import html

import httpx

from harness.tenants import Tenant, create_series
from tests.portal.test_admin_portal import signed_in_csrf


async def test_the_ledger_shows_document_references_and_finds_a_document(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "refs", format="R-{seq}")
    for ref in ("SO-1", "SO-2", "SO-1"):
        await client.post("/series/refs/next", json={"document_ref": ref}, headers=tenant.issuer)
    await signed_in_csrf(client, tenant)
    page = await client.get("/admin/series/refs")
    assert page.status_code == 200 and "SO-2" in page.text
    found = await client.get("/admin/series/refs", params={"document_ref": "SO-1"})
    numbers = [n for n in ("R-1", "R-2", "R-3") if f'<code class="number">{n}</code>' in found.text]
    assert numbers == ["R-1", "R-3"]
    csv = await client.get("/admin/series/refs/ledger.csv", params={"document_ref": "SO-2"})
    assert csv.text.splitlines()[1].startswith("all,,2,R-2,")
    assert len(csv.text.splitlines()) == 2


async def test_a_counter_is_set_from_the_portal_upwards_only_and_audited(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "live", format="L-{YYYY}-{seq}", reset="yearly")
    token = await signed_in_csrf(client, tenant)
    form = await client.get("/admin/series/live/counter")
    assert form.status_code == 200 and 'name="last_value"' in form.text
    body = {"period": "2026", "last_value": "4711", "reason": "Go-live", "csrf": token}
    done = await client.post("/admin/series/live/counter", data=body)
    assert done.status_code == 303, done.text
    assert "notice=counter-set" in done.headers["location"]
    down = await client.post("/admin/series/live/counter", data={**body, "last_value": "10"})
    assert down.status_code == 409 and "only moves up" in html.unescape(down.text)
    bad = await client.post("/admin/series/live/counter", data={**body, "period": "26"})
    assert bad.status_code == 422 and 'id="error-period"' in bad.text
    issued = await client.post(
        "/series/live/next", json={"date": "2026-05-01"}, headers=tenant.issuer
    )
    assert issued.json()["number"] == "L-2026-4712"
    audit = await client.get("/audit", params={"action": "counter.set"}, headers=tenant.admin)
    assert [item["actor"].startswith("key ") for item in audit.json()["items"]] == [True]


async def test_a_number_is_recorded_from_the_portal_and_shown_as_external(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "pad", format="P-{seq:03}")
    token = await signed_in_csrf(client, tenant)
    body = {"number": "P-007", "date": "2026-02-03", "document_ref": "PAPER-1", "csrf": token}
    done = await client.post("/admin/series/pad/record", data=body)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/admin/series/pad?notice=recorded&subject=P-007"
    again = await client.post("/admin/series/pad/record", data=body)
    assert again.status_code == 409 and "already has" in html.unescape(again.text)
    unreadable = await client.post("/admin/series/pad/record", data={**body, "number": "P-7"})
    assert unreadable.status_code == 422
    page = await client.get("/admin/series/pad")
    assert "PAPER-1" in page.text and ">external<" in page.text


async def test_a_csv_import_records_the_good_rows_and_reports_every_row(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "imp", format="I-{YYYY}-{seq}", reset="yearly")
    token = await signed_in_csrf(client, tenant)
    form = await client.get("/admin/series/imp/import")
    assert form.status_code == 200 and "number,date,document_ref" in form.text
    csv = (
        "number,date,document_ref\n"
        "I-2026-3,2026-01-10,OLD-3\n"
        "I-2026-3,2026-01-10,OLD-3\n"  # twice: the second is refused
        "I-2025-4,2026-01-10,\n"  # the year of another period
        "I-2026-5,not a date,\n"
        "I-2026-1,2026-01-02,OLD-1\n"  # takes the place of a value passed when 3 came
    )
    report = await client.post("/admin/series/imp/import", data={"csv": csv, "csrf": token})
    assert report.status_code == 200, report.text
    text = html.unescape(report.text)
    assert "<strong>2</strong> of 5 rows recorded." in text
    assert text.count(">recorded<") == 2 and text.count(">refused<") == 3
    assert "date: Input should be a valid date" in text
    assert "already has 'I-2026-3'" in text and "not a number series 'imp' renders" in text
    ledger = await client.get("/series/imp/numbers", headers=tenant.issuer)
    rows = [(e["number"], e["status"], e["external"]) for e in ledger.json()["items"]]
    assert rows == [
        ("I-2026-1", "issued", True),
        ("I-2026-2", "voided", True),
        ("I-2026-3", "issued", True),
    ]


async def test_an_import_without_its_header_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "nohead", format="N-{seq}")
    token = await signed_in_csrf(client, tenant)
    response = await client.post(
        "/admin/series/nohead/import", data={"csv": "N-1,2026-01-01\n", "csrf": token}
    )
    assert response.status_code == 422 and 'id="error-csv"' in response.text
    ledger = await client.get("/series/nohead/numbers", headers=tenant.issuer)
    assert ledger.json()["items"] == []
