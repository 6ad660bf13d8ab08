"""Counters set by hand and numbers recorded from elsewhere while two real ``docnum serve``
processes issue from the same counter, per mode.

Checked afterwards: no value and no number reaches two requests or two ledger rows; no issuing
request failed (a counter moved by hand never makes one collide); every number recorded from
elsewhere is still only in the ledger once; in gapless mode the gap report is empty, every value
up to the counter being issued, recorded or voided with a reason.
"""

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.load import ledger_entries
from harness.processes import PATIENT, SMALL_POOL, ServiceProcess, services
from harness.tenants import Tenant, create_series

PROCESSES = 2
CLIENTS = 6
REQUESTS_PER_CLIENT = 40
MOVES = 8  # each admin move raises the counter, then records a number above it
JUMP = 7


@pytest.fixture(scope="module")
def processes(database_url: str, service_dir: Path) -> Iterator[list[ServiceProcess]]:
    env = {"DOCNUM_LOG_LEVEL": "warning", **SMALL_POOL, **PATIENT}
    with services(database_url, service_dir, PROCESSES, env=env) as started:
        yield started


async def issue(http: httpx.AsyncClient, tenant: Tenant, name: str, failures: list[str]) -> None:
    for _ in range(REQUESTS_PER_CLIENT):
        response = await http.post(f"/series/{name}/next", json={}, headers=tenant.issuer)
        if response.status_code != 201:
            failures.append(response.text)


async def move_by_hand(http: httpx.AsyncClient, tenant: Tenant, name: str) -> list[str]:
    """Raise the counter past its top and record a number above it, again and again."""
    recorded: list[str] = []
    for _ in range(MOVES):
        top = await preview_value(http, tenant, name)
        moved = await http.put(
            f"/series/{name}/counters/all",
            json={"last_value": top + JUMP, "reason": "moved while issuing"},
            headers=tenant.admin,
        )
        # Issuers may have passed the value read meanwhile: then the move is refused, never lost.
        assert moved.status_code in (200, 409), moved.text
        number = f"H-{await preview_value(http, tenant, name) + JUMP}"
        response = await http.post(
            f"/series/{name}/numbers",
            json={"number": number, "date": "2026-05-01"},
            headers=tenant.admin,
        )
        assert response.status_code in (201, 409), response.text
        if response.status_code == 201:
            recorded.append(number)
        await asyncio.sleep(0)
    return recorded


async def preview_value(http: httpx.AsyncClient, tenant: Tenant, name: str) -> int:
    response = await http.get(f"/series/{name}/next-preview", headers=tenant.issuer)
    assert response.status_code == 200, response.text
    value: int = response.json()["value"]
    return value


@pytest.mark.parametrize("mode", ["gapless", "sequence", "cached"])
async def test_counters_moved_by_hand_while_processes_issue_hand_out_nothing_twice(
    processes: list[ServiceProcess], tenant: Tenant, mode: str
) -> None:
    name = f"hand-{mode}"
    clients = [httpx.AsyncClient(base_url=p.url, timeout=60) for p in processes]
    try:
        await create_series(
            clients[0], tenant, name, mode=mode, format="H-{seq}", ledger=True, block_size=5
        )
        failures: list[str] = []
        spread = itertools.cycle(clients)
        results = await asyncio.gather(
            move_by_hand(clients[0], tenant, name),
            *(issue(next(spread), tenant, name, failures) for _ in range(CLIENTS)),
        )
        recorded = results[0]
        assert failures == []
        assert recorded, "no number was recorded from elsewhere"
        rows = await ledger_entries(clients[1], name, headers=tenant.issuer)
    finally:
        for client in clients:
            await client.aclose()
    values = [row["value"] for row in rows]
    numbers = [row["number"] for row in rows]
    assert len(values) == len(set(values)) and len(numbers) == len(set(numbers))
    issued = [r for r in rows if r["status"] == "issued" and not r["external"]]
    assert len(issued) == CLIENTS * REQUESTS_PER_CLIENT
    external = {r["number"] for r in rows if r["external"] and r["status"] == "issued"}
    assert external == set(recorded)
    if mode == "gapless":
        assert values == list(range(1, len(values) + 1))
        assert all(r["void_reason"] for r in rows if r["status"] == "voided")
