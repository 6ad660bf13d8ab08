"""Date order and closed periods with real ``docnum serve`` processes on one database: group
commit in each process, the counter row's lock between them, and a close committed by one
process while the other still holds the open definition in its cache."""

import asyncio
import datetime
import logging
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.load import ledger_entries
from harness.processes import PATIENT, ServiceProcess, services
from harness.tenants import Tenant, create_series

PROCESSES = 2
CLIENTS = 12
REQUESTS_PER_CLIENT = 40
FIRST_DAY = datetime.date(2026, 1, 1)
SERVICE_ENV = {
    "DOCNUM_LOG_LEVEL": "warning",
    "DOCNUM_POOL_MIN_SIZE": "1",
    "DOCNUM_POOL_MAX_SIZE": "4",
    **PATIENT,
}
NAMED_DATE = re.compile(r"has a number dated (\d{4}-\d{2}-\d{2})")

pytestmark = pytest.mark.xdist_group("processes")


@pytest.fixture(scope="module")
def processes(database_url: str, service_dir: Path) -> Iterator[list[ServiceProcess]]:
    with services(database_url, service_dir, PROCESSES, env=SERVICE_ENV) as started:
        yield started


async def whole_ledger(url: str, tenant: Tenant, name: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, headers=tenant.admin) as http:
        return await ledger_entries(http, name)


async def test_strict_date_order_holds_under_group_commit_across_processes(
    processes: list[ServiceProcess],
    client: httpx.AsyncClient,
    tenant: Tenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Clients send dates that mostly rise and often step back a day. Every request gets a number
    or a 409 date-order naming a date the ledger holds and later than its own; the ledger, in
    value order, never goes back in time and has no hole."""
    caplog.set_level(logging.WARNING, logger="httpx")
    await create_series(client, tenant, "ordered", date_order="strict")
    issued: list[tuple[list[int], str]] = []
    refused: list[tuple[str, str]] = []  # (date sent, date named)
    failures: list[str] = []

    async def one_client(index: int) -> None:
        chance = random.Random(index)
        url = processes[index % PROCESSES].url
        async with httpx.AsyncClient(base_url=url, headers=tenant.issuer, timeout=30) as http:
            for sent in range(REQUESTS_PER_CLIENT):
                offset = sent // 4 + chance.choice((-1, 0, 0, 1))
                date = (FIRST_DAY + datetime.timedelta(days=max(0, offset))).isoformat()
                if sent % 5 == 4:
                    body: dict[str, Any] = {"count": 1 + sent % 3, "date": date}
                    response = await http.post("/series/ordered/batch", json=body)
                else:
                    response = await http.post("/series/ordered/next", json={"date": date})
                if response.status_code == 201:
                    got = response.json()
                    issued.append((got.get("values") or [got["value"]], date))
                elif response.status_code == 409 and response.json()["type"].endswith(
                    "/date-order"
                ):
                    named = NAMED_DATE.search(response.json()["detail"])
                    assert named, response.text
                    refused.append((date, named[1]))
                else:
                    failures.append(f"{response.status_code} {response.text}")

    await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
    assert failures == []
    assert issued and refused  # the dates did step back, and most numbers were issued

    ledger = await whole_ledger(processes[0].url, tenant, "ordered")
    values = [entry["value"] for entry in ledger]
    dates = [entry["date"] for entry in ledger]
    assert values == list(range(1, len(values) + 1))
    assert dates == sorted(dates)
    answered = {value: date for got, date in issued for value in got}
    assert {entry["value"]: entry["date"] for entry in ledger} == answered
    for date, named in refused:
        assert date < named and named in set(dates), (date, named)


async def test_a_close_committed_by_one_process_holds_on_the_other_at_once(
    processes: list[ServiceProcess],
    client: httpx.AsyncClient,
    tenant: Tenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While clients issue into 2025 through both processes, the period is closed through the
    first one. Every request begun after the close was answered is refused, on the other process
    too (which may not have heard of the change yet), and every number recorded was answered."""
    caplog.set_level(logging.WARNING, logger="httpx")
    await create_series(client, tenant, "closing", reset="yearly", format="{YYYY}-{seq}")
    closed = asyncio.Event()
    some_issued = asyncio.Event()
    numbers: list[str] = []
    after_close: list[int] = []
    failures: list[str] = []

    async def one_client(index: int) -> None:
        url = processes[index % PROCESSES].url
        async with httpx.AsyncClient(base_url=url, headers=tenant.issuer, timeout=30) as http:
            while len(after_close) < 10 * CLIENTS:
                begun_after = closed.is_set()
                response = await http.post("/series/closing/next", json={"date": "2025-12-31"})
                if response.status_code == 201:
                    numbers.append(response.json()["number"])
                    if len(numbers) >= 3 * CLIENTS:
                        some_issued.set()
                elif not (
                    response.status_code == 409
                    and response.json()["type"].endswith("/period-closed")
                ):
                    failures.append(f"{response.status_code} {response.text}")
                if begun_after:
                    after_close.append(response.status_code)

    clients = [asyncio.create_task(one_client(i)) for i in range(CLIENTS)]
    await some_issued.wait()
    async with httpx.AsyncClient(base_url=processes[0].url, headers=tenant.admin) as admin:
        response = await admin.patch("/series/closing", json={"closed_through": "2025-12-31"})
        assert response.status_code == 200, response.text
    closed.set()
    await asyncio.gather(*clients)
    assert failures == []
    assert set(after_close) == {409}
    ledger = await whole_ledger(processes[1].url, tenant, "closing")
    assert sorted(entry["number"] for entry in ledger) == sorted(numbers)
    opened = await client.post(
        "/series/closing/next", json={"date": "2026-01-01"}, headers=tenant.issuer
    )
    assert opened.status_code == 201 and opened.json()["number"] == "2026-1"
