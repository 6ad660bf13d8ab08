"""The rules a series' numbers follow beyond uniqueness: dates in order, closed periods, number
rules (length, characters, country profiles) and the warning that a counter runs low."""

import asyncio
import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from app import metrics
from app import series as series_sql
from app.definition import Series
from app.issuing.counters import ADVANCE_COUNTER
from app.issuing.engine import Answer, Issuer
from app.problems import DateOrder, PeriodClosed
from app.rules import PROFILES, parse_character_set
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem
from tests.support.database import recording_pool


def day(text: str) -> datetime.date:
    return datetime.date.fromisoformat(text)


async def post_next(
    client: httpx.AsyncClient, tenant: Tenant, name: str, **body: Any
) -> httpx.Response:
    return await client.post(f"/series/{name}/next", json=body, headers=tenant.issuer)


async def patch(
    client: httpx.AsyncClient, tenant: Tenant, name: str, **fields: Any
) -> httpx.Response:
    return await client.patch(f"/series/{name}", json=fields, headers=tenant.admin)


async def ledger(client: httpx.AsyncClient, tenant: Tenant, name: str) -> list[tuple[int, str]]:
    response = await client.get(f"/series/{name}/numbers?limit=1000", headers=tenant.admin)
    assert response.status_code == 200, response.text
    return [(e["value"], e["date"]) for e in response.json()["items"]]


async def audit_of(client: httpx.AsyncClient, tenant: Tenant, action: str) -> list[Any]:
    params = {"action": action, "limit": 100}
    response = await client.get("/audit", params=params, headers=tenant.admin)
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


def issue_on(issuer: Issuer, series: Series, date: str, count: int = 1) -> Any:
    return issuer.issue(
        series,
        count=count,
        date=day(date),
        variables={},
        claim=None,
        respond=lambda issued: b"",
    )


# --- date order -------------------------------------------------------------------------------


async def test_a_strict_series_refuses_a_date_before_its_counters_last_date(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(
        client, tenant, "s", date_order="strict", reset="yearly", format="{YYYY}-{seq}"
    )
    assert (await post_next(client, tenant, "s", date="2026-03-05")).status_code == 201
    refused = await post_next(client, tenant, "s", date="2026-03-04")
    body = assert_problem(refused, 409, "date-order")
    assert "2026-03-05" in body["detail"]
    batch = await client.post(
        "/series/s/batch", json={"count": 3, "date": "2026-01-01"}, headers=tenant.issuer
    )
    assert_problem(batch, 409, "date-order")
    assert (await post_next(client, tenant, "s", date="2026-03-05")).status_code == 201
    assert (await post_next(client, tenant, "s", date="2026-04-01")).status_code == 201
    # Another period's counter has dates of its own.
    assert (await post_next(client, tenant, "s", date="2025-12-31")).status_code == 201
    assert await ledger(client, tenant, "s") == [
        (1, "2025-12-31"),
        (1, "2026-03-05"),
        (2, "2026-03-05"),
        (3, "2026-04-01"),
    ]


async def test_a_series_made_strict_later_orders_from_the_dates_it_issued(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "s")
    assert (await post_next(client, tenant, "s", date="2026-03-05")).status_code == 201
    assert (await post_next(client, tenant, "s", date="2026-03-01")).status_code == 201
    assert (await patch(client, tenant, "s", date_order="strict")).status_code == 200
    assert_problem(await post_next(client, tenant, "s", date="2026-03-04"), 409, "date-order")
    assert (await post_next(client, tenant, "s", date="2026-03-05")).status_code == 201


@pytest.mark.parametrize("mode", ["sequence", "cached"])
async def test_strict_date_order_needs_a_gapless_series(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    body = {"name": "s", "format": "T-{seq}", "mode": mode, "date_order": "strict"}
    refused = await client.post("/series", json=body, headers=tenant.admin)
    problem = assert_problem(refused, 422, "invalid-request")
    assert problem["errors"][0]["field"] == "date_order"
    await create_series(client, tenant, "g", date_order="strict")
    changed = await patch(client, tenant, "g", mode=mode)
    assert assert_problem(changed, 422, "invalid-request")["errors"][0]["field"] == "date_order"


async def test_within_a_group_only_the_requests_dated_out_of_order_fail(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    await create_series(client, tenant, "s", date_order="strict")
    series = await series_sql.fetch(pool, tenant.id, "s")
    async with recording_pool(database_url) as (own_pool, sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        assert (await issue_on(issuer, series, "2026-03-10")).issued.values == [1]
        dates = ["2026-03-10", "2026-03-12", "2026-03-11", "2026-03-12", "2026-03-09", "2026-03-20"]
        outcomes = await asyncio.gather(
            *(issue_on(issuer, series, d) for d in dates), return_exceptions=True
        )
        # Dates that step back within the group are found before the counter is touched; the
        # group is then served one request per transaction.
        assert sent.count(ADVANCE_COUNTER) == 1 + len(dates)
    assert isinstance(outcomes[2], DateOrder) and outcomes[2].last_date == day("2026-03-12")
    assert isinstance(outcomes[4], DateOrder)
    good = [o for o in outcomes if isinstance(o, Answer)]
    assert [a.issued.values for a in good if a.issued] == [[2], [3], [4], [5]]
    assert await ledger(client, tenant, "s") == [
        (1, "2026-03-10"),
        (2, "2026-03-10"),
        (3, "2026-03-12"),
        (4, "2026-03-12"),
        (5, "2026-03-20"),
    ]


async def test_a_group_dated_before_the_counters_last_date_fails_only_that_request(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    """The counter's last date is checked by the statement that advances it."""
    await create_series(client, tenant, "s", date_order="strict")
    series = await series_sql.fetch(pool, tenant.id, "s")
    assert (await post_next(client, tenant, "s", date="2026-03-10")).status_code == 201
    async with recording_pool(database_url) as (own_pool, _sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        outcomes = await asyncio.gather(
            issue_on(issuer, series, "2026-03-09"),
            issue_on(issuer, series, "2026-03-11", count=2),
            return_exceptions=True,
        )
    assert isinstance(outcomes[0], DateOrder) and outcomes[0].last_date == day("2026-03-10")
    assert isinstance(outcomes[1], Answer) and outcomes[1].issued
    assert outcomes[1].issued.values == [2, 3]


# --- closed periods ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["gapless", "sequence", "cached"])
async def test_nothing_is_issued_into_a_closed_period(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(
        client, tenant, "s", mode=mode, reset="yearly", format="{YYYY}-{seq}", block_size=1
    )
    assert (await post_next(client, tenant, "s", date="2025-12-31")).status_code == 201
    assert (await patch(client, tenant, "s", closed_through="2025-12-31")).status_code == 200
    refused = await post_next(client, tenant, "s", date="2025-12-31")
    assert "2025-12-31" in assert_problem(refused, 409, "period-closed")["detail"]
    batch = await client.post(
        "/series/s/batch", json={"count": 2, "date": "2025-06-30"}, headers=tenant.issuer
    )
    assert_problem(batch, 409, "period-closed")
    opened = await post_next(client, tenant, "s", date="2026-01-01")
    assert opened.status_code == 201 and opened.json()["number"] == "2026-1"


async def test_nothing_is_recorded_counted_or_previewed_into_a_closed_period(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Numbers recorded from elsewhere, counters set by hand and the preview check the close
    too (``Series.check_open``)."""
    await create_series(
        client, tenant, "s", reset="yearly", format="S-{YYYY}-{seq}", closed_through="2025-12-31"
    )
    recorded = await client.post(
        "/series/s/numbers",
        json={"number": "S-2025-7", "date": "2025-12-31"},
        headers=tenant.admin,
    )
    assert_problem(recorded, 409, "period-closed")
    counter = await client.put(
        "/series/s/counters/2025",
        json={"last_value": 10, "reason": "go-live"},
        headers=tenant.admin,
    )
    assert_problem(counter, 409, "period-closed")
    preview = await client.get("/series/s/next-preview?date=2025-06-30", headers=tenant.admin)
    assert_problem(preview, 409, "period-closed")
    opened = await client.post(
        "/series/s/numbers",
        json={"number": "S-2026-7", "date": "2026-01-02"},
        headers=tenant.admin,
    )
    assert opened.status_code == 201, opened.text
    # Values 1 to 6 are passed by the recorded number and kept as voided, all in 2026.
    assert await ledger(client, tenant, "s") == [(v, "2026-01-02") for v in range(1, 8)]


async def test_a_closed_period_moves_back_only_with_a_reason_and_both_are_audited(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "s", closed_through="2025-06-30")
    assert (await patch(client, tenant, "s", closed_through="2025-12-31")).status_code == 200
    back = await patch(client, tenant, "s", closed_through="2025-11-30")
    assert assert_problem(back, 422, "invalid-request")["errors"][0]["field"] == "closed_through"
    cleared = await patch(client, tenant, "s", closed_through=None)
    assert_problem(cleared, 422, "invalid-request")
    stray = await patch(client, tenant, "s", description="x", reopen_reason="why")
    assert_problem(stray, 422, "invalid-request")
    reason = "credit note for a December invoice, approved by the accountant"
    reopened = await patch(client, tenant, "s", closed_through="2025-11-30", reopen_reason=reason)
    assert reopened.status_code == 200 and reopened.json()["closed_through"] == "2025-11-30"
    (closing,) = await audit_of(client, tenant, "series.closed")
    assert closing["details"]["closed_through"] == {"old": "2025-06-30", "new": "2025-12-31"}
    (reopening,) = await audit_of(client, tenant, "series.reopened")
    assert reopening["details"]["closed_through"] == {"old": "2025-12-31", "new": "2025-11-30"}
    assert reopening["details"]["reopen_reason"] == reason
    assert (await post_next(client, tenant, "s", date="2025-12-01")).status_code == 201


async def test_a_retry_after_a_close_still_gets_its_first_answer(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "s")
    headers = {**tenant.issuer, "Idempotency-Key": "k1"}
    body = {"date": "2025-12-30"}
    first = await client.post("/series/s/next", json=body, headers=headers)
    assert first.status_code == 201
    assert (await patch(client, tenant, "s", closed_through="2025-12-31")).status_code == 200
    again = await client.post("/series/s/next", json=body, headers=headers)
    assert again.status_code == 201 and again.json() == first.json()


async def test_a_close_racing_requests_in_flight_lets_none_through_once_it_committed(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    """Requests that read the open definition are in flight while the close commits: each is
    either served before the close (it holds the series row FOR KEY SHARE, so the close waits for
    it) or takes nothing, reloads and is refused. This issuer never hears of the close, so every
    request it begins afterwards reads the open series, and is still refused."""
    await create_series(client, tenant, "s")
    series = await series_sql.fetch(pool, tenant.id, "s")
    closed = asyncio.Event()
    some_issued = asyncio.Event()
    begun_after_close: list[object] = []

    async def keep_issuing(issuer: Issuer) -> list[object]:
        outcomes: list[object] = []
        while len(begun_after_close) < 200:
            after = closed.is_set()
            try:
                outcome: object = await issue_on(issuer, series, "2025-12-31")
            except PeriodClosed as refused:
                outcome = refused
            outcomes.append(outcome)
            if len(outcomes) >= 3:
                some_issued.set()
            if after:
                begun_after_close.append(outcome)
        return outcomes

    async with recording_pool(database_url) as (own_pool, _sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        clients = [asyncio.create_task(keep_issuing(issuer)) for _ in range(8)]
        await some_issued.wait()
        assert (await patch(client, tenant, "s", closed_through="2025-12-31")).status_code == 200
        closed.set()
        results = [o for done in await asyncio.gather(*clients) for o in done]
    issued = [o for o in results if isinstance(o, Answer)]
    assert len(issued) >= 3
    assert all(isinstance(o, PeriodClosed) for o in begun_after_close)
    assert await _recorded(pool, series) == len(issued)  # every number recorded was answered


async def _recorded(pool: asyncpg.Pool, series: Series) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM numbers WHERE series_id = $1", series.id
        )
    return count


# --- number rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"number_profile": "in-gst", "format": "INV/{seq}"}, "format"),  # 19 digits: too long
        ({"number_profile": "in-gst", "format": "INV_{seq}", "max_value": 999}, "format"),
        ({"number_profile": "pt-saft", "format": "FT-A-{seq}"}, "format"),
        ({"number_profile": "fr-einvoice", "format": "F {seq}", "max_value": 9}, "format"),
        ({"max_length": 8, "format": "INV-{seq}", "max_value": 99999}, "format"),
        ({"allowed_characters": "0-9", "format": "INV-{seq}"}, "format"),
        ({"allowed_characters": "z-a"}, "allowed_characters"),
        ({"max_length": 65}, "max_length"),
        ({"number_profile": "xx-none"}, "number_profile"),
        ({"format": "{YY}/{FY:YYYY-YY}/{seq}", "number_profile": "in-gst", "max_value": 9}, None),
    ],
)
async def test_a_series_whose_numbers_would_break_its_rules_is_refused(
    client: httpx.AsyncClient, tenant: Tenant, fields: dict[str, Any], field: str | None
) -> None:
    body = {"name": "s", "format": "T-{seq}", **fields}
    response = await client.post("/series", json=body, headers=tenant.admin)
    if field is None:
        assert response.status_code == 201, response.text
        return
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"][0]["field"] == field, problem


@pytest.mark.parametrize(
    ("fields", "good", "bad"),
    [
        (  # India: 16 characters of A-Za-z0-9/-
            {"number_profile": "in-gst", "format": "{var:b}/{seq:05}", "max_value": 99999},
            "MUM-2",
            "MUM_2",
        ),
        (
            {"number_profile": "in-gst", "format": "{var:b}/{seq:05}", "max_value": 99999},
            "ABCDEFGHIJ",
            "ABCDEFGHIJK",
        ),
        (  # Portugal: TYPE SERIES/NUMBER, the series of letters and digits only
            {"number_profile": "pt-saft", "format": "FT {var:b}/{seq}"},
            "A2026",
            "A-2026",
        ),
        ({"allowed_characters": "A-Z0-9-", "format": "{var:b}-{seq}"}, "AB", "ab"),
    ],
)
async def test_a_variable_that_breaks_the_rules_is_refused_and_nothing_is_issued(
    client: httpx.AsyncClient,
    tenant: Tenant,
    fields: dict[str, Any],
    good: str,
    bad: str,
) -> None:
    await create_series(client, tenant, "s", **fields)
    refused = await post_next(client, tenant, "s", variables={"b": bad})
    assert_problem(refused, 422, "number-rule")
    issued = await post_next(client, tenant, "s", variables={"b": good})
    assert issued.status_code == 201, issued.text
    assert good in issued.json()["number"]
    assert [value for value, _ in await ledger(client, tenant, "s")] == [1]


async def test_tightening_the_rules_checks_the_current_format(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "s", format="INV-{seq:06}", max_value=999999)
    assert (await patch(client, tenant, "s", max_length=10)).status_code == 200
    refused = await patch(client, tenant, "s", max_length=9)
    assert assert_problem(refused, 422, "invalid-request")["errors"][0]["field"] == "format"
    assert (await patch(client, tenant, "s", number_profile="it-sdi")).status_code == 200
    assert (await patch(client, tenant, "s", number_profile=None)).status_code == 200


@pytest.mark.parametrize(
    ("notation", "inside", "outside"),
    [
        ("A-Za-z0-9/-", "AZaz09/-", "_ .+"),
        ("+_/-", "+_/-", "aA0"),
        ("-a", "-a", "b"),
        (" -~", " ~A{", "\u00e9\t"),
        ("]^\\", "]^\\", "a"),
    ],
)
def test_a_character_set_is_single_characters_and_ranges(
    notation: str, inside: str, outside: str
) -> None:
    allowed = parse_character_set(notation)
    assert allowed.fullmatch(inside)
    for char in outside:
        assert allowed.fullmatch(char) is None, char


def test_every_profile_names_its_source_and_fits_the_service_limit() -> None:
    for name, profile in PROFILES.items():
        assert profile.source and profile.max_length <= 64, name
        parse_character_set(profile.characters)


# --- warnings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["gapless", "sequence", "cached"])
async def test_a_counter_running_low_is_counted_audited_and_shown_once(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(
        client, tenant, "s", mode=mode, max_value=10, warn_remaining=3, block_size=2
    )
    low = metrics.RUNNING_LOW.labels(str(tenant.id), "s")
    before = low._value.get()
    batch = await client.post("/series/s/batch", json={"count": 7}, headers=tenant.issuer)
    assert batch.status_code == 201  # 3 values left: not fewer than 3 yet
    assert await audit_of(client, tenant, "counter.running_low") == []
    assert (await post_next(client, tenant, "s")).json()["value"] == 8  # 2 left
    assert (await post_next(client, tenant, "s")).json()["value"] == 9
    (warning,) = await audit_of(client, tenant, "counter.running_low")
    assert warning["details"] == {
        "period": "all",
        "variables": {},
        "remaining": 2,
        "warn_remaining": 3,
    }
    assert warning["actor"] == "docnum"
    assert low._value.get() == before + 1


async def test_a_batch_that_crosses_the_warning_warns_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "s", max_value=100, warn_remaining=50)
    batch = await client.post("/series/s/batch", json={"count": 80}, headers=tenant.issuer)
    assert batch.status_code == 201
    (warning,) = await audit_of(client, tenant, "counter.running_low")
    assert warning["details"]["remaining"] == 20
