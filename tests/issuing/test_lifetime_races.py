"""Administration racing requests on several processes never repeats a number.

Each trial creates a fresh series, then sends a burst of ``next`` requests spread over three real
``docnum serve`` processes and, at the same moment, changes the series through one of them: its
mode, start, step, reset or format. Processes that did not make the change hold the old
definition until its notification arrives, so some requests read it and run after the change
committed. Whatever was accepted or refused, no number comes out twice, and a series that ends
gapless has exactly ``start, start + step, …`` in its ledger.
"""

import asyncio
import itertools
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.processes import PATIENT, SMALL_POOL, services_side_by_side
from harness.tenants import Tenant

pytestmark = pytest.mark.xdist_group("processes")

CLIENTS_PER_PROCESS = 3
# Each change, from a fresh series of each mode.
CHANGES: list[dict[str, Any]] = [
    {"mode": "gapless"},
    {"mode": "sequence"},
    {"mode": "cached"},
    {"start": 100},
    {"step": 7},
    {"reset": "yearly"},
    {"format": "S/{YYYY}/{seq}"},
    {"format": "T-{YYYY}-{seq:04}", "effective_from": "2026-01-01"},
]
MODES = ["sequence", "gapless", "cached"]


async def test_changes_racing_requests_on_three_processes_never_repeat_a_number(
    database_url: str, service_dir: Path, tenant: Tenant
) -> None:
    async with (
        services_side_by_side(
            database_url, service_dir, 3, env={**SMALL_POOL, **PATIENT}
        ) as processes,
        httpx.AsyncClient(timeout=30) as http,
    ):
        urls = [p.url for p in processes]
        # The changes that used to repeat a number (a mode switched before the first number) run
        # several times more.
        risky = [("sequence", {"mode": "gapless"}), ("sequence", {"mode": "cached"})] * 6
        trials = list(itertools.product(MODES, CHANGES)) + risky
        for number, (mode, change) in enumerate(trials):
            name = f"race-{number}"
            body = {
                "name": name,
                "format": "R-{YYYY}-{seq}",
                "mode": mode,
                "ledger": True,
                "block_size": 5,
            }
            created = await http.post(f"{urls[0]}/series", json=body, headers=tenant.admin)
            assert created.status_code == 201, created.text
            # Every process reads the series (the gap report goes through its catalog), so each
            # holds the definition from before the change.
            for url in urls:
                read = await http.get(f"{url}/series/{name}/gaps", headers=tenant.issuer)
                assert read.status_code == 200, read.text

            changed, issued = await _race(http, urls, tenant, name, change)
            assert changed.status_code in (200, 409), changed.text
            assert all(a.status_code == 201 for a in issued), [a.text for a in issued]
            numbers = [a.json()["number"] for a in issued]
            assert len(set(numbers)) == len(numbers), (mode, change, changed.text, numbers)
            await _ledger_matches(http, urls[1], tenant, name, numbers)


async def _race(
    http: httpx.AsyncClient, urls: list[str], tenant: Tenant, name: str, change: dict[str, Any]
) -> tuple[httpx.Response, list[httpx.Response]]:
    """Clients issue one request after another at every process, their first requests staggered
    over the few milliseconds the change takes, until after it was answered: the first number
    (which a structural change must not follow) meets each moment of the change."""
    done = asyncio.Event()
    issued: list[httpx.Response] = []

    async def client(url: str, delay: float) -> None:
        await asyncio.sleep(delay)
        while not done.is_set():
            issued.append(await http.post(f"{url}/series/{name}/next", headers=tenant.issuer))

    administer = asyncio.create_task(
        http.patch(f"{urls[0]}/series/{name}", json=change, headers=tenant.admin)
    )
    clients = [
        asyncio.create_task(client(url, 0.001 * i))
        for i, url in enumerate(urls * CLIENTS_PER_PROCESS)
    ]
    changed = await administer
    await asyncio.sleep(0.03)
    done.set()
    await asyncio.gather(*clients)
    return changed, issued


async def _ledger_matches(
    http: httpx.AsyncClient, url: str, tenant: Tenant, name: str, numbers: list[str]
) -> None:
    """Every answered number is in the ledger, and a gapless ledger has no hole."""
    series = (await http.get(f"{url}/series/{name}", headers=tenant.admin)).json()
    ledger = await http.get(
        f"{url}/series/{name}/numbers", params={"limit": 1000}, headers=tenant.admin
    )
    entries = ledger.json()["items"]
    assert sorted(e["number"] for e in entries) == sorted(numbers), (series, entries)
    if series["mode"] == "gapless":
        values = sorted(e["value"] for e in entries)
        start, step = series["start"], series["step"]
        assert values == [start + step * i for i in range(len(values))], (series, values)
