"""Go-live counters (PUT /series/{name}/counters/{period}), numbers recorded from elsewhere
(POST /series/{name}/numbers) and the preview of the next number, in every mode."""

from typing import Any

import httpx
import pytest

from app.issuing.manual import MAX_SKIPPED
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem

MODES = ("gapless", "sequence", "cached")
REASON = "Go-live: the previous system issued up to here"


async def set_counter(
    client: httpx.AsyncClient, tenant: Tenant, series: str, period: str, **body: Any
) -> httpx.Response:
    return await client.put(
        f"/series/{series}/counters/{period}",
        json={"reason": REASON, **body},
        headers=tenant.admin,
    )


async def record(
    client: httpx.AsyncClient, tenant: Tenant, series: str, number: str, date: str, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/series/{series}/numbers",
        json={"number": number, "date": date, **body},
        headers=tenant.admin,
    )


async def next_number(client: httpx.AsyncClient, tenant: Tenant, series: str, **body: Any) -> str:
    response = await client.post(f"/series/{series}/next", json=body, headers=tenant.issuer)
    assert response.status_code == 201, response.text
    number: str = response.json()["number"]
    return number


async def gap_report(
    client: httpx.AsyncClient, tenant: Tenant, series: str, period: str
) -> dict[str, Any]:
    response = await client.get(
        f"/series/{series}/gaps", params={"period": period}, headers=tenant.issuer
    )
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


@pytest.mark.parametrize("mode", MODES)
async def test_a_counter_set_at_go_live_continues_from_the_value_after(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(
        client, tenant, "inv", mode=mode, reset="yearly", format="INV-{YYYY}-{seq:06}", ledger=True
    )
    response = await set_counter(client, tenant, "inv", "2026", last_value=4711)
    assert response.status_code == 200, response.text
    voided = 4711 if mode == "gapless" else 0
    assert response.json() == {
        "period": "2026",
        "variables": {},
        "previous": None,
        "last_value": 4711,
        "voided": voided,
    }
    issued = await client.post(
        "/series/inv/next", json={"date": "2026-06-01"}, headers=tenant.issuer
    )
    if mode == "cached":  # its first block and the run a request takes meanwhile race
        assert issued.json()["value"] > 4711
    else:
        assert issued.json()["number"] == "INV-2026-004712"


async def test_a_gapless_counter_records_the_values_it_passes_as_voided_with_the_reason(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "g", reset="yearly", format="G-{YYYY}-{seq}")
    await next_number(client, tenant, "g", date="2026-02-01")
    response = await set_counter(client, tenant, "g", "2026", last_value=40)
    assert response.json()["previous"] == 1 and response.json()["voided"] == 39
    assert (await gap_report(client, tenant, "g", "2026"))["missing"] == 0
    voided = await client.get(
        "/series/g/numbers", params={"status": "voided"}, headers=tenant.issuer
    )
    items = voided.json()["items"]
    assert [e["value"] for e in items] == list(range(2, 41))
    assert {(e["void_reason"], e["date"]) for e in items} == {(REASON, "2026-01-01")}
    assert await next_number(client, tenant, "g", date="2026-02-02") == "G-2026-41"


async def test_each_period_starts_from_its_own_value(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "y", reset="yearly", format="Y-{YYYY}-{seq}")
    assert (await set_counter(client, tenant, "y", "2026", last_value=10)).status_code == 200
    assert (await set_counter(client, tenant, "y", "2027", last_value=3)).status_code == 200
    assert await next_number(client, tenant, "y", date="2026-05-05") == "Y-2026-11"
    assert await next_number(client, tenant, "y", date="2027-05-05") == "Y-2027-4"
    assert await next_number(client, tenant, "y", date="2028-05-05") == "Y-2028-1"


async def test_a_counter_of_variable_values_is_named_by_them(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "po", format="PO-{var:branch}-{seq:04}")
    response = await set_counter(
        client, tenant, "po", "all", last_value=7, variables={"branch": "BR07"}
    )
    assert response.json()["variables"] == {"branch": "BR07"}
    assert await next_number(client, tenant, "po", variables={"branch": "BR07"}) == "PO-BR07-0008"
    assert await next_number(client, tenant, "po", variables={"branch": "BR08"}) == "PO-BR08-0001"


@pytest.mark.parametrize("mode", MODES)
async def test_a_counter_never_moves_down(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "d", mode=mode, format="D-{seq}", ledger=True)
    issued = {await next_number(client, tenant, "d") for _ in range(3)}
    for value in (3, 1):
        response = await set_counter(client, tenant, "d", "all", last_value=value)
        assert_problem(response, 409, "counter-not-raised")
    following = await next_number(client, tenant, "d")
    assert following not in issued
    if mode != "cached":  # a cached process serves its block, whose order varies
        assert following == "D-4"


async def test_setting_a_counter_needs_an_admin_key_and_a_reason(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "a", format="A-{seq}")
    forbidden = await client.put(
        "/series/a/counters/all", json={"last_value": 5, "reason": "x"}, headers=tenant.issuer
    )
    assert_problem(forbidden, 403, "forbidden")
    missing = await client.put(
        "/series/a/counters/all", json={"last_value": 5}, headers=tenant.admin
    )
    assert_problem(missing, 422, "invalid-request")


async def test_a_date_outside_the_period_and_a_value_off_the_grid_are_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "s", reset="yearly", format="S-{YYYY}-{seq}", step=10)
    elsewhere = await set_counter(client, tenant, "s", "2026", last_value=11, date="2027-01-01")
    assert_problem(elsewhere, 422, "invalid-request")
    off_grid = await set_counter(client, tenant, "s", "2026", last_value=15)
    assert_problem(off_grid, 422, "invalid-request")
    assert (await set_counter(client, tenant, "s", "2026", last_value=31)).json()["voided"] == 4


async def test_a_gapless_counter_passes_a_bounded_number_of_values_at_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "big", format="B-{seq}")
    response = await set_counter(client, tenant, "big", "all", last_value=MAX_SKIPPED + 1)
    problem = assert_problem(response, 422, "invalid-request")
    assert "in steps" in problem["detail"]
    assert await next_number(client, tenant, "big") == "B-1"


async def test_setting_a_counter_is_audited(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create_series(client, tenant, "au", format="AU-{seq}")
    await set_counter(client, tenant, "au", "all", last_value=2)
    audit = await client.get("/audit", params={"action": "counter.set"}, headers=tenant.admin)
    [item] = audit.json()["items"]
    assert item["series"] == "au"
    assert item["details"] == {
        "period": "all",
        "variables": "",
        "from": None,
        "to": 2,
        "reason": REASON,
        "voided": 2,
    }


async def test_a_retried_counter_change_with_its_key_gets_the_first_answer(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "k", format="K-{seq}")
    headers = {**tenant.admin, "Idempotency-Key": "go-live"}
    body = {"last_value": 9, "reason": REASON}
    first = await client.put("/series/k/counters/all", json=body, headers=headers)
    again = await client.put("/series/k/counters/all", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content


# Numbers recorded from elsewhere


@pytest.mark.parametrize("mode", ("gapless", "sequence", "cached"))
async def test_a_number_recorded_above_the_counter_is_never_handed_out(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(
        client,
        tenant,
        "e",
        mode=mode,
        reset="yearly",
        format="E-{YYYY}-{seq:04}",
        ledger=True,
        block_size=1,
    )
    await next_number(client, tenant, "e", date="2026-03-01")
    response = await record(client, tenant, "e", "E-2026-0005", "2026-03-02", document_ref="PAD-1")
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == "/series/e/numbers/E-2026-0005"
    recorded = response.json()
    assert (recorded["value"], recorded["external"], recorded["document_ref"]) == (5, True, "PAD-1")
    assert recorded["status"] == "issued" and recorded["date"] == "2026-03-02"
    batch = await client.post(
        "/series/e/batch", json={"count": 10, "date": "2026-03-03"}, headers=tenant.issuer
    )
    assert batch.status_code == 201, batch.text
    assert "E-2026-0005" not in batch.json()["numbers"]
    if mode != "cached":  # a cached process still serves the block it holds, below the counter
        assert batch.json()["numbers"][0] == "E-2026-0006"
    if mode == "gapless":
        report = await gap_report(client, tenant, "e", "2026")
        assert report["missing"] == 0
        voided = await client.get(
            "/series/e/numbers", params={"status": "voided"}, headers=tenant.issuer
        )
        reasons = {e["void_reason"] for e in voided.json()["items"]}
        assert reasons == {"skipped: E-2026-0005 was recorded from elsewhere"}


async def test_a_number_below_a_gapless_counter_fills_its_gap_only_if_free(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "f", format="F-{seq}")
    for _ in range(3):
        await next_number(client, tenant, "f")
    assert_problem(await record(client, tenant, "f", "F-2", "2026-01-01"), 409, "number-exists")


async def test_history_recorded_after_going_live_takes_the_place_of_the_values_passed(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "mig", reset="yearly", format="M-{YYYY}-{seq:04}")
    await set_counter(client, tenant, "mig", "2026", last_value=5)
    for value in (4, 1):
        response = await record(
            client,
            tenant,
            "mig",
            f"M-2026-{value:04d}",
            "2026-02-0" + str(value),
            document_ref=f"OLD-{value}",
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "issued" and response.json()["void_reason"] is None
    ledger = await client.get("/series/mig/numbers", headers=tenant.issuer)
    rows = [(e["value"], e["status"], e["document_ref"]) for e in ledger.json()["items"]]
    assert rows == [
        (1, "issued", "OLD-1"),
        (2, "voided", None),
        (3, "voided", None),
        (4, "issued", "OLD-4"),
        (5, "voided", None),
    ]
    assert (await gap_report(client, tenant, "mig", "2026"))["missing"] == 0
    again = await record(client, tenant, "mig", "M-2026-0004", "2026-02-04")
    assert_problem(again, 409, "number-exists")


async def test_a_number_voided_by_a_person_is_never_replaced(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "vp", format="VP-{seq}")
    await next_number(client, tenant, "vp")
    voided = await client.post(
        "/series/vp/numbers/VP-1/void", json={"reason": "cancelled"}, headers=tenant.admin
    )
    assert voided.status_code == 200, voided.text
    assert_problem(await record(client, tenant, "vp", "VP-1", "2026-01-01"), 409, "number-exists")


async def test_a_sequence_value_it_skipped_can_be_recorded(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "q", mode="sequence", format="Q-{seq}", ledger=True)
    await set_counter(client, tenant, "q", "all", last_value=3)
    response = await record(client, tenant, "q", "Q-2", "2026-01-01")
    assert response.status_code == 201, response.text
    assert await next_number(client, tenant, "q") == "Q-4"


async def test_a_cached_value_a_process_may_hold_cannot_be_recorded(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "c", mode="cached", format="C-{seq}", ledger=True)
    await next_number(client, tenant, "c")  # this process now holds a block of 100
    assert_problem(await record(client, tenant, "c", "C-50", "2026-01-01"), 409, "number-held")
    assert (await record(client, tenant, "c", "C-500", "2026-01-01")).status_code == 201


@pytest.mark.parametrize(
    ("number", "date"),
    [
        ("E-2026-12", "2026-03-01"),  # fewer digits than the format pads to
        ("E-2025-0012", "2026-03-01"),  # a year that is not the document's
        ("X-2026-0012", "2026-03-01"),
        ("E-2026-0000", "2026-03-01"),  # below start
    ],
)
async def test_a_number_that_does_not_read_as_one_of_the_series_is_refused(
    client: httpx.AsyncClient, tenant: Tenant, number: str, date: str
) -> None:
    await create_series(client, tenant, "e", reset="yearly", format="E-{YYYY}-{seq:04}")
    response = await record(client, tenant, "e", number, date)
    assert_problem(
        response, 422, "number-unreadable" if "0000" not in number else "invalid-request"
    )
    assert await next_number(client, tenant, "e", date=date) == "E-2026-0001"


async def test_a_number_dated_outside_the_service_window_is_refused_as_issuing_refuses_it(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "old", reset="yearly", format="O-{YYYY}-{seq}")
    problem = assert_problem(
        await record(client, tenant, "old", "O-1999-1", "1999-05-01"), 422, "invalid-request"
    )
    assert problem["errors"][0]["field"] == "date"


async def test_a_number_in_an_earlier_format_is_recorded_under_the_counter_it_belongs_to(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "h", reset="yearly", format="OLD-{YYYY}-{seq}")
    changed = await client.patch(
        "/series/h", json={"format": "NEW/{YYYY}/{seq}"}, headers=tenant.admin
    )
    assert changed.status_code == 200, changed.text
    assert (await record(client, tenant, "h", "OLD-2026-7", "2026-04-01")).status_code == 201
    assert await next_number(client, tenant, "h", date="2026-04-02") == "NEW/2026/8"


async def test_a_recorded_number_needs_a_ledger_and_is_audited(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "nl", mode="sequence", format="NL-{seq}")
    assert_problem(await record(client, tenant, "nl", "NL-1", "2026-01-01"), 409, "ledger-disabled")
    await create_series(client, tenant, "w", format="W-{seq}")
    await record(client, tenant, "w", "W-3", "2026-01-01", document_ref="PAPER")
    audit = await client.get("/audit", params={"action": "number.recorded"}, headers=tenant.admin)
    [item] = audit.json()["items"]
    assert item["details"] == {
        "number": "W-3",
        "date": "2026-01-01",
        "document_ref": "PAPER",
        "voided": 2,
    }


# Preview


@pytest.mark.parametrize("mode", MODES)
async def test_the_preview_shows_the_next_number_and_takes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(
        client, tenant, "v", mode=mode, format="V-{var:desk}-{YYYY}-{seq}", reset="yearly"
    )
    params = {"date": "2026-07-01", "variables": "desk=A"}
    for expected in ("V-A-2026-1", "V-A-2026-1"):
        response = await client.get("/series/v/next-preview", params=params, headers=tenant.issuer)
        assert response.status_code == 200, response.text
        assert response.json()["number"] == expected
    await set_counter(
        client, tenant, "v", "2026", last_value=41, variables={"desk": "A"}, date="2026-07-01"
    )
    preview = await client.get("/series/v/next-preview", params=params, headers=tenant.issuer)
    assert preview.json() | {"mode": None} == {
        "series": "v",
        "number": "V-A-2026-42",
        "value": 42,
        "period": "2026",
        "variables": {"desk": "A"},
        "date": "2026-07-01",
        "mode": None,
    }
    taken = await client.post(
        "/series/v/next",
        json={"date": "2026-07-01", "variables": {"desk": "A"}},
        headers=tenant.issuer,
    )
    if mode == "cached":  # its first block and the run a request takes meanwhile race
        assert taken.json()["value"] >= 42
    else:
        assert taken.json()["number"] == "V-A-2026-42"


async def test_the_preview_names_missing_variables_and_an_exhausted_series(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "m", format="M-{var:desk}-{seq}", max_value=1)
    missing = await client.get("/series/m/next-preview", headers=tenant.issuer)
    assert_problem(missing, 422, "invalid-request")
    await next_number(client, tenant, "m", variables={"desk": "A"})
    full = await client.get(
        "/series/m/next-preview", params={"variables": "desk=A"}, headers=tenant.issuer
    )
    assert_problem(full, 409, "series-exhausted")


async def test_a_counter_set_by_hand_puts_the_series_in_use(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "use", format="U-{seq}")
    assert (await set_counter(client, tenant, "use", "all", last_value=9)).status_code == 200
    changed = await client.patch("/series/use", json={"start": 100}, headers=tenant.admin)
    assert_problem(changed, 409, "series-in-use")
