"""The proof: three real ``docnum serve`` processes on one database, thousands of next and batch
requests from dozens of concurrent clients spread across them, per mode. For sequence and cached,
half the clients use a series with a ledger and half one without (the two take different paths).

Checked afterwards: no value and no number reaches two requests; every number is the value
rendered by the format; a batch is one contiguous run (gapless, cached) or ascending (sequence);
gapless values are exactly start, start + step, ... with no hole; where a series keeps a ledger,
it holds exactly what the clients received, and for gapless /gaps reports nothing missing and
/verify an intact hash chain with one event per number.

Each runs twice: with the processes connected to PostgreSQL directly, and through PgBouncer in
transaction pooling mode (LISTEN and migrations on their direct URL), there with half the
requests, which keeps the suite within its time budget.
"""

import asyncio
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.load import ledger_entries
from harness.processes import PATIENT, ServiceProcess, services
from harness.tenants import Tenant, create_series
from tests.support.pgbouncer import ROUTES, reached_by

PROCESSES = 3
CLIENTS = 36
REQUESTS = {"direct": 5_004, "pgbouncer": 2_502}  # per mode, by route: 139 or 69 per client
BATCH_EVERY = 10  # every tenth request of a client is a batch of 1 to 9
FORMAT = "MP-{seq:08}"


SERVICE_ENV = {
    # Access logs cost as much as the rest of a request, and this test is not about them.
    "DOCNUM_LOG_LEVEL": "warning",
    # The test server's connections are shared with every other test running meanwhile.
    "DOCNUM_POOL_MIN_SIZE": "1",
    "DOCNUM_POOL_MAX_SIZE": "4",
    # A transaction may wait in PgBouncer's queue for a server connection on a busy machine.
    **PATIENT,
}


@pytest.fixture(scope="module", params=ROUTES)
def route(request: pytest.FixtureRequest) -> str:
    """How the processes reach PostgreSQL."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def processes(route: str, database_url: str, service_dir: Path) -> Iterator[list[ServiceProcess]]:
    with (
        reached_by(route, database_url) as (url, env),
        services(url, service_dir, PROCESSES, env={**SERVICE_ENV, **env}) as started,
    ):
        yield started


@dataclass
class Received:
    """What the clients got back from one series."""

    numbers: dict[int, list[str]] = field(default_factory=dict)  # value -> numbers received
    batches: list[list[int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, values: list[int], numbers: list[str]) -> None:
        for value, number in zip(values, numbers, strict=True):
            self.numbers.setdefault(value, []).append(number)


async def run_clients(
    processes: list[ServiceProcess], tenant: Tenant, names: list[str], requests: int
) -> dict[str, Received]:
    """Each client sends one request at a time over a connection of its own."""
    received = {name: Received() for name in names}
    # httpx makes a TLS context per client unless given one, which costs as much as a hundred
    # requests; plain HTTP never uses it.
    tls = ssl.create_default_context()
    # One connection per client, since httpx checks every pooled connection on every request;
    # reused only while surely open, since the server drops idle ones after 5 s.
    limits = httpx.Limits(max_connections=1, keepalive_expiry=1.0)

    async def client(index: int) -> None:
        name = names[index % len(names)]
        got = received[name]
        url = processes[index % len(processes)].url
        async with httpx.AsyncClient(
            base_url=url, headers=tenant.issuer, timeout=30, limits=limits, verify=tls
        ) as http:
            for sent in range(requests // CLIENTS):
                if sent % BATCH_EVERY == BATCH_EVERY - 1:
                    count = 1 + (index + sent) % 9
                    response = await http.post(f"/series/{name}/batch", json={"count": count})
                else:
                    response = await http.post(f"/series/{name}/next")
                if response.status_code != 201:
                    got.failures.append(f"{url}: {response.status_code} {response.text}")
                    continue
                body = response.json()
                if "values" in body:
                    got.batches.append(body["values"])
                    got.add(body["values"], body["numbers"])
                else:
                    got.add([body["value"]], [body["number"]])

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return received


async def recorded(http: httpx.AsyncClient, name: str) -> list[tuple[int, str]]:
    """The whole ledger of a series, as (value, number)."""
    return [(e["value"], e["number"]) for e in await ledger_entries(http, name)]


@pytest.mark.xdist_group("processes")
@pytest.mark.parametrize(
    ("mode", "start", "step", "ledgers"),
    [
        ("gapless", 5, 3, [True]),
        ("sequence", 1, 1, [True, False]),
        ("cached", 100, 7, [True, False]),
    ],
)
async def test_processes_never_issue_a_value_twice(
    processes: list[ServiceProcess],
    route: str,
    client: httpx.AsyncClient,
    tenant: Tenant,
    mode: str,
    start: int,
    step: int,
    ledgers: list[bool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="httpx")  # a record per request would cost more
    names = [f"mp{i}" for i in range(len(ledgers))]
    for name, ledger in zip(names, ledgers, strict=True):
        await create_series(
            client,
            tenant,
            name,
            mode=mode,
            start=start,
            step=step,
            ledger=ledger,
            block_size=20,
            format=FORMAT,
        )

    received = await run_clients(processes, tenant, names, REQUESTS[route])

    total = sum(len(r.numbers) for r in received.values())
    assert total >= REQUESTS[route]  # batches bring more values than requests
    for name, ledger in zip(names, ledgers, strict=True):
        got = received[name]
        assert got.failures == []
        twice = {v: n for v, n in got.numbers.items() if len(n) > 1}
        assert twice == {}
        values = sorted(got.numbers)
        assert all(got.numbers[v] == [f"MP-{v:08d}"] for v in values)
        assert all(v >= start and (v - start) % step == 0 for v in values)
        for batch in got.batches:
            if mode == "sequence":
                assert batch == sorted(batch)
            else:
                assert batch == list(range(batch[0], batch[0] + step * len(batch), step))
        if mode == "gapless":
            assert values == [start + step * i for i in range(len(values))]
        if not ledger:
            continue
        async with httpx.AsyncClient(base_url=processes[0].url, headers=tenant.admin) as http:
            assert sorted(await recorded(http, name)) == [(v, f"MP-{v:08d}") for v in values]
            if mode == "gapless":
                report: dict[str, Any] = (await http.get(f"/series/{name}/gaps")).json()
                assert (report["last_value"], report["gaps"]) == (values[-1], [])
                # Every process appended to one chain, in one order, without a break.
                chained: dict[str, Any] = (await http.get(f"/series/{name}/verify")).json()
                assert chained["intact"] is True, chained
                assert chained["counters"][0]["events"] == len(values)
