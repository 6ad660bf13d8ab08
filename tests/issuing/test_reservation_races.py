"""Reservations under load: three real ``docnum serve`` processes, dozens of concurrent clients
mixing ``next``, batches, and reservations that are confirmed, released, left to expire, or
confirmed and released at the same moment, in every mode (with a ledger).

Expiry runs in the processes' own sweepers while the load goes on: a client that abandons a
reservation moves its ``expires_at`` into the past in the database (the clock of record), and
then tries to confirm it, racing the sweepers.

Checked once every reservation is settled: no value is issued twice (by ``next``, a batch or a
confirmed reservation); every ledger entry is one of those issued values, or a value voided with
the reason ``released`` or ``expired`` that a let-go reservation held; nothing is left reserved;
in gapless mode every value from start to the counter's last value is in the ledger (the gap
report is empty).
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from harness.load import ledger_entries
from harness.processes import PATIENT, ServiceProcess, services
from harness.tenants import Tenant, create_series

PROCESSES = 3
CLIENTS = 24
REQUESTS_PER_CLIENT = 40
FORMAT = "RR-{seq:08}"
SETTLE_WITHIN = 120.0
# A connection is reused only while surely open: the server drops idle ones after 5 s, and a
# client's second connection (a confirm and a release sent at once) may idle that long.
LIMITS = httpx.Limits(keepalive_expiry=1.0)
LAPSE = "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1"
HELD = """
SELECT count(*) FROM reservations AS r JOIN series AS s ON s.id = r.series_id
WHERE s.tenant_id = $1 AND r.status = 'reserved'
"""
SERVICE_ENV = {
    "DOCNUM_LOG_LEVEL": "warning",
    "DOCNUM_POOL_MIN_SIZE": "1",
    "DOCNUM_POOL_MAX_SIZE": "4",
    "DOCNUM_RESERVATION_SWEEP_SECONDS": "0.2",
    **PATIENT,
}


@pytest.fixture(scope="module")
def processes(database_url: str, service_dir: Path) -> Iterator[list[ServiceProcess]]:
    with services(database_url, service_dir, PROCESSES, env=SERVICE_ENV) as started:
        yield started


@dataclass
class Outcomes:
    """What the clients were told, per series."""

    issued: list[int] = field(default_factory=list)  # by next, batch and confirmed reservations
    let_go: dict[int, set[str]] = field(default_factory=dict)  # value -> released / expired
    failures: list[str] = field(default_factory=list)

    def fail(self, response: httpx.Response) -> None:
        self.failures.append(f"{response.request.url}: {response.status_code} {response.text}")


async def run_clients(
    processes: list[ServiceProcess], tenant: Tenant, pool: asyncpg.Pool, name: str
) -> Outcomes:
    got = Outcomes()

    def let_go(held: dict[str, Any], why: str) -> None:
        for value in held["values"]:
            got.let_go.setdefault(value, set()).add(why)

    async def client(index: int) -> None:
        url = processes[index % len(processes)].url
        async with httpx.AsyncClient(
            base_url=url, headers=tenant.issuer, timeout=60, limits=LIMITS
        ) as http:
            for sent in range(REQUESTS_PER_CLIENT):
                kind = (index + sent) % 10
                count = 1 + (index + sent) % 3
                if kind in (0, 1, 2, 4, 6):
                    response = await http.post(f"/series/{name}/next")
                    if response.status_code != 201:
                        got.fail(response)
                        continue
                    got.issued.append(response.json()["value"])
                    continue
                if kind == 9:
                    response = await http.post(f"/series/{name}/batch", json={"count": count})
                    if response.status_code != 201:
                        got.fail(response)
                        continue
                    got.issued.extend(response.json()["values"])
                    continue
                reserved = await http.post(f"/series/{name}/reservations", json={"count": count})
                if reserved.status_code != 201:
                    got.fail(reserved)
                    continue
                held = reserved.json()
                path = f"/series/{name}/reservations/{held['id']}"
                if kind == 3:  # confirmed
                    response = await http.post(f"{path}/confirm", json={"document_ref": "D"})
                    if response.status_code != 200:
                        got.fail(response)
                        continue
                    got.issued.extend(held["values"])
                elif kind == 5:  # released
                    response = await http.delete(path)
                    if response.status_code != 200:
                        got.fail(response)
                        continue
                    let_go(held, "released")
                elif kind == 7:  # abandoned: expired by a sweeper, or by this confirm
                    await pool.execute(LAPSE, uuid.UUID(held["id"]))
                    response = await http.post(f"{path}/confirm")
                    if response.json().get("type") != "/problems/reservation-expired":
                        got.fail(response)
                        continue
                    let_go(held, "expired")
                else:  # confirmed and released at once: exactly one of them wins
                    confirmed, released = await asyncio.gather(
                        http.post(f"{path}/confirm"), http.delete(path)
                    )
                    if (confirmed.status_code, released.status_code) == (200, 409):
                        got.issued.extend(held["values"])
                    elif (confirmed.status_code, released.status_code) == (409, 200):
                        let_go(held, "released")
                    else:
                        got.fail(confirmed)
                        got.fail(released)

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return got


async def settled(pool: asyncpg.Pool, tenant: Tenant) -> None:
    """Until no reservation of the tenant is held (every one was confirmed, released or
    expired: the abandoned ones lapsed during the run, so the sweepers get to them)."""
    deadline = time.monotonic() + SETTLE_WITHIN
    while await pool.fetchval(HELD, tenant.id):
        assert time.monotonic() < deadline, f"reservations still held after {SETTLE_WITHIN} s"
        await asyncio.sleep(0.2)


@pytest.mark.xdist_group("processes")
@pytest.mark.parametrize(
    ("mode", "start", "step"), [("gapless", 5, 3), ("sequence", 1, 1), ("cached", 100, 7)]
)
async def test_reservations_interleaved_with_issues_across_processes_keep_every_value_accounted_for(
    processes: list[ServiceProcess],
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    tenant: Tenant,
    mode: str,
    start: int,
    step: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="httpx")
    name = f"rr-{mode}"
    await create_series(
        client,
        tenant,
        name,
        mode=mode,
        start=start,
        step=step,
        ledger=True,
        block_size=20,
        format=FORMAT,
    )

    got = await run_clients(processes, tenant, pool, name)
    await settled(pool, tenant)

    assert got.failures == []
    assert len(got.issued) == len(set(got.issued)), "a value was issued twice"
    assert got.let_go, "no reservation was let go"
    async with httpx.AsyncClient(base_url=processes[0].url, headers=tenant.admin) as http:
        entries = await ledger_entries(http, name)
        report = (await http.get(f"/series/{name}/gaps")).json()
        verified = await http.get(f"/series/{name}/verify")
    by_value = {e["value"]: e for e in entries}
    assert len(by_value) == len(entries)
    assert all(e["number"] == f"RR-{e['value']:08d}" for e in entries)
    assert sorted(v for v, e in by_value.items() if e["status"] == "issued") == sorted(got.issued)
    voided = {v: e["void_reason"] for v, e in by_value.items() if e["status"] == "voided"}
    assert all(reason in got.let_go.get(v, set()) for v, reason in voided.items()), voided
    assert all(e["status"] != "reserved" for e in entries)
    if mode == "gapless":
        assert sorted(by_value) == [start + step * i for i in range(len(by_value))]
        assert (report["missing"], report["gaps"]) == (0, [])
        assert report["last_value"] == max(by_value)
        assert verified.json()["intact"] is True, verified.text
