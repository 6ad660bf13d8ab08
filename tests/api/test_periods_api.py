"""Periods through the API: the request's date (or today in the series' time zone) decides the
counter's period; each period counts from start on its own."""

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem

MODES = ["gapless", "sequence", "cached"]
UTC = datetime.UTC

SetNow = Callable[[datetime.datetime], None]


@pytest.fixture
def set_now(app: Any) -> Iterator[SetNow]:
    """Sets the instant the issuer takes as now, for this test only."""
    issuer = app.state.services.issuer
    original = issuer.clock

    def setter(instant: datetime.datetime) -> None:
        issuer.clock = lambda: instant

    try:
        yield setter
    finally:
        issuer.clock = original


async def issue(
    client: httpx.AsyncClient, tenant: Tenant, date: str | None = None
) -> dict[str, Any]:
    body = {} if date is None else {"date": date}
    response = await client.post("/series/p/next", json=body, headers=tenant.issuer)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def seen(answer: dict[str, Any]) -> tuple[str, str, int]:
    return answer["period"], answer["number"], answer["value"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_new_year_starts_a_new_period_from_start(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(
        client, tenant, "p", mode=mode, reset="yearly", format="{YYYY}/{seq}", start=5, step=3
    )
    answers = [
        await issue(client, tenant, date)
        for date in ["2026-12-31", "2026-12-31", "2027-01-01", "2026-06-15", "2027-01-01"]
    ]
    assert [seen(a) for a in answers] == [
        ("2026", "2026/5", 5),
        ("2026", "2026/8", 8),
        ("2027", "2027/5", 5),
        ("2026", "2026/11", 11),
        ("2027", "2027/8", 8),
    ]
    assert [a["date"] for a in answers][:3] == ["2026-12-31", "2026-12-31", "2027-01-01"]


@pytest.mark.parametrize(
    ("last_day", "next_day"),
    [
        ("2026-01-31", "2026-02-01"),
        ("2026-02-28", "2026-03-01"),
        ("2028-02-29", "2028-03-01"),
        ("2026-04-30", "2026-05-01"),
        ("2026-12-31", "2027-01-01"),
    ],
)
async def test_month_ends(
    client: httpx.AsyncClient, tenant: Tenant, last_day: str, next_day: str
) -> None:
    await create_series(client, tenant, "p", reset="monthly", format="{YYYY}{MM}-{seq}")
    before, after = await issue(client, tenant, last_day), await issue(client, tenant, next_day)
    assert before["period"] == last_day[:7]
    assert after["period"] == next_day[:7]
    assert before["value"] == after["value"] == 1
    assert (await issue(client, tenant, last_day))["value"] == 2


async def test_daily_and_never(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create_series(client, tenant, "p", reset="daily", format="{YYYY}{MM}{DD}-{seq}")
    answers = [await issue(client, tenant, d) for d in ["2026-12-31", "2027-01-01", "2027-01-01"]]
    assert [seen(a) for a in answers] == [
        ("2026-12-31", "20261231-1", 1),
        ("2027-01-01", "20270101-1", 1),
        ("2027-01-01", "20270101-2", 2),
    ]
    await create_series(client, tenant, "q", reset="never", format="{YYYY}-{seq}")
    numbers = []
    for date in ["2026-12-31", "2027-01-01", "2001-05-05"]:
        response = await client.post("/series/q/next", json={"date": date}, headers=tenant.issuer)
        numbers.append((response.json()["period"], response.json()["number"]))
    assert numbers == [("all", "2026-1"), ("all", "2027-2"), ("all", "2001-3")]


async def test_a_fiscal_year_starting_in_april(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create_series(
        client, tenant, "p", reset="yearly", fiscal_year_start=4, format="FY{FY}-{seq}"
    )
    answers = [
        await issue(client, tenant, date)
        for date in ["2026-03-31", "2026-04-01", "2025-04-01", "2027-03-31", "2026-01-01"]
    ]
    assert [seen(a) for a in answers] == [
        ("2025", "FY2025-1", 1),
        ("2026", "FY2026-1", 1),
        ("2025", "FY2025-2", 2),
        ("2026", "FY2026-2", 2),
        ("2025", "FY2025-3", 3),
    ]


async def test_a_fiscal_year_leaves_monthly_periods_on_the_calendar(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(
        client, tenant, "p", reset="monthly", fiscal_year_start=4, format="{FY}{YYYY}{MM}-{seq}"
    )
    answers = [await issue(client, tenant, date) for date in ["2026-03-31", "2026-04-01"]]
    assert [seen(a) for a in answers] == [
        ("2026-03", "2025202603-1", 1),
        ("2026-04", "2026202604-1", 1),
    ]


@pytest.mark.parametrize(
    ("timezone", "now", "date", "period"),
    [
        # 23:59:59 on 31 December in New York is already 1 January in UTC.
        ("America/New_York", "2027-01-01T04:59:59+00:00", "2026-12-31", "2026"),
        ("America/New_York", "2027-01-01T05:00:00+00:00", "2027-01-01", "2027"),
        ("UTC", "2027-01-01T04:59:59+00:00", "2027-01-01", "2027"),
        ("UTC", "2026-12-31T23:59:59+00:00", "2026-12-31", "2026"),
        # UTC+14: a new year there while it is still 31 December in UTC.
        ("Pacific/Kiritimati", "2026-12-31T09:59:59+00:00", "2026-12-31", "2026"),
        ("Pacific/Kiritimati", "2026-12-31T10:00:00+00:00", "2027-01-01", "2027"),
    ],
)
async def test_today_is_the_date_in_the_series_time_zone(
    client: httpx.AsyncClient,
    tenant: Tenant,
    set_now: SetNow,
    timezone: str,
    now: str,
    date: str,
    period: str,
) -> None:
    await create_series(
        client, tenant, "p", reset="yearly", timezone=timezone, format="{YYYY}-{seq}"
    )
    set_now(datetime.datetime.fromisoformat(now))
    answer = await issue(client, tenant)
    assert (answer["date"], answer["period"], answer["number"]) == (date, period, f"{period}-1")


async def test_a_date_in_the_request_wins_over_today(
    client: httpx.AsyncClient, tenant: Tenant, set_now: SetNow
) -> None:
    await create_series(client, tenant, "p", reset="yearly", format="{YYYY}-{seq}")
    set_now(datetime.datetime(2030, 6, 1, tzinfo=UTC))
    assert seen(await issue(client, tenant, "2026-12-31")) == ("2026", "2026-1", 1)
    assert seen(await issue(client, tenant)) == ("2030", "2030-1", 1)


async def test_gaps_default_to_the_current_period(
    client: httpx.AsyncClient, tenant: Tenant, set_now: SetNow
) -> None:
    await create_series(
        client, tenant, "p", reset="daily", timezone="Asia/Tokyo", format="{YYYY}{MM}{DD}-{seq}"
    )
    set_now(datetime.datetime(2026, 12, 31, 15, 0, tzinfo=UTC))  # 1 January, 00:00 in Tokyo
    assert (await issue(client, tenant))["period"] == "2027-01-01"
    report = (await client.get("/series/p/gaps", headers=tenant.issuer)).json()
    assert (report["period"], report["last_value"], report["gaps"]) == ("2027-01-01", 1, [])


@pytest.mark.parametrize("date", ["2026-02-30", "2026-13-01", "31.12.2026", "yesterday"])
async def test_a_date_that_is_no_date_is_a_422(
    client: httpx.AsyncClient, tenant: Tenant, date: str
) -> None:
    await create_series(client, tenant, "p")
    response = await client.post("/series/p/next", json={"date": date}, headers=tenant.issuer)
    body = assert_problem(response, 422, "invalid-request")
    assert [e["field"] for e in body["errors"]] == ["date"]
