"""A service process killed with SIGKILL while reservations are outstanding costs no guarantee.

Clients issue, reserve, confirm and release numbers of a gapless series across two ``docnum
serve`` processes, and leave some reservations held. One process is killed mid-load and started
again. The held reservations outlive it: they are still reserved afterwards. Time then passes for
them (their ``expires_at`` is moved into the past in the database, the clock of record) and the
restarted process's sweeper expires them. Then: nothing is left reserved, every value from start
to the counter's last value is in the ledger (the gap report is empty), every value a client was
told is issued is issued, once, and every voided value has the reason ``released`` or
``expired``.
"""

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from harness.load import eventually, ledger_entries
from harness.processes import SMALL_POOL, ServiceProcess, services_side_by_side, start_service
from harness.tenants import Tenant, create_series

pytestmark = pytest.mark.xdist_group("processes")

CLIENTS = 8
# Answers to wait for before the kill and after the restart, so both happen under load.
PHASE_ANSWERS = 80
PHASE_WITHIN = 30.0
SETTLE_WITHIN = 60.0
ENV = {**SMALL_POOL, "DOCNUM_RESERVATION_SWEEP_SECONDS": "0.2"}
LAPSE_ALL = """
UPDATE reservations SET expires_at = now() - interval '1 second'
WHERE series_id = (SELECT id FROM series WHERE tenant_id = $1 AND name = $2)
  AND status = 'reserved'
"""
HELD = """
SELECT count(*) FROM reservations
WHERE series_id = (SELECT id FROM series WHERE tenant_id = $1 AND name = $2)
  AND status = 'reserved'
"""


class Load:
    """Clients that each send one request at a time to the process of their index."""

    def __init__(self, running: list[ServiceProcess], tenant: Tenant, name: str) -> None:
        self.running = running
        self.tenant = tenant
        self.name = name
        self.answers = 0
        self.issued: list[int] = []  # values clients were told are issued
        self.held: list[str] = []  # reservations left held
        self.unexpected: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self.client(i, stop) for i in range(CLIENTS)))

    async def client(self, index: int, stop: asyncio.Event) -> None:
        sent = 0
        while not stop.is_set():
            url = self.running[index % 2].url
            async with httpx.AsyncClient(
                base_url=url, headers=self.tenant.issuer, timeout=10
            ) as http:
                try:
                    await self.step(http, (index + sent) % 5)
                except httpx.TransportError:
                    await asyncio.sleep(0.05)  # the process is gone; its outcome is unknown
            sent += 1

    async def step(self, http: httpx.AsyncClient, kind: int) -> None:
        series = f"/series/{self.name}"
        if kind == 0:
            response = await http.post(f"{series}/next")
            if self.expect(response, 201):
                self.issued.append(response.json()["value"])
            return
        reserved = await http.post(f"{series}/reservations", json={"ttl_seconds": 3600})
        if not self.expect(reserved, 201):
            return
        held: dict[str, Any] = reserved.json()
        path = f"{series}/reservations/{held['id']}"
        if kind in (1, 2):
            confirmed = await http.post(f"{path}/confirm")
            if self.expect(confirmed, 200):
                self.issued.extend(held["values"])
        elif kind == 3:
            self.expect(await http.delete(path), 200)
        else:
            self.held.append(held["id"])

    def expect(self, response: httpx.Response, status: int) -> bool:
        if response.status_code == status:
            self.answers += 1
            return True
        if response.status_code != 503:  # a process starting or stopping may answer 503
            self.unexpected.append(f"{response.status_code} {response.text}")
        return False


async def test_kill_9_with_reservations_outstanding_leaves_every_value_accounted_for(
    client: httpx.AsyncClient,
    tenant: Tenant,
    pool: asyncpg.Pool,
    database_url: str,
    service_dir: Path,
) -> None:
    name = "held"
    await create_series(client, tenant, name, format="H-{seq}")
    async with services_side_by_side(database_url, service_dir, 2, env=ENV) as running:
        load = Load(running, tenant, name)
        stop = asyncio.Event()
        clients = asyncio.create_task(load.run(stop))
        try:
            await eventually(
                lambda: load.answers >= PHASE_ANSWERS, "load under way", within=PHASE_WITHIN
            )
            running[0].kill()
            at_kill = load.answers
            await eventually(
                lambda: load.answers >= at_kill + PHASE_ANSWERS,
                "the other serves",
                within=PHASE_WITHIN,
            )
            restarted = await asyncio.to_thread(start_service, database_url, service_dir, env=ENV)
            running[0] = restarted
            at_restart = load.answers
            await eventually(
                lambda: load.answers >= at_restart + PHASE_ANSWERS,
                "both serve again",
                within=PHASE_WITHIN,
            )
        finally:
            stop.set()
            await clients
        assert load.unexpected == []
        assert load.held, "no reservation was left held"
        # The held reservations outlived the killed process.
        assert await pool.fetchval(HELD, tenant.id, name) >= len(load.held)

        await pool.execute(LAPSE_ALL, tenant.id, name)
        deadline = time.monotonic() + SETTLE_WITHIN
        while await pool.fetchval(HELD, tenant.id, name):
            assert time.monotonic() < deadline, "the sweepers expired nothing"
            await asyncio.sleep(0.1)

        async with httpx.AsyncClient(base_url=restarted.url, headers=tenant.admin) as http:
            entries = await ledger_entries(http, name)
            report = (await http.get(f"/series/{name}/gaps")).json()
            verified = (await http.get(f"/series/{name}/verify")).json()
            for held_id in load.held:
                found = await http.get(f"/series/{name}/reservations/{held_id}")
                assert found.json()["status"] == "expired", found.text

    values = sorted(e["value"] for e in entries)
    assert values == list(range(1, len(values) + 1))
    assert (report["missing"], report["gaps"], report["last_value"]) == (0, [], values[-1])
    assert verified["intact"] is True, verified
    assert all(e["status"] in ("issued", "voided") for e in entries)
    assert all(
        e["void_reason"] in ("released", "expired") for e in entries if e["status"] == "voided"
    )
    issued = {e["value"] for e in entries if e["status"] == "issued"}
    assert len(load.issued) == len(set(load.issued))
    assert set(load.issued) <= issued
