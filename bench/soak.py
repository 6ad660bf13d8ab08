"""A bounded soak: several ``docnum serve`` processes under mixed traffic for a while, then every
guarantee checked and each process's memory judged flat or not.

    .venv/bin/python -m bench.soak                # 60 s, 3 processes, 16 issuing clients
    .venv/bin/python -m bench.soak --seconds 300

Two tenants each own a gapless, a sequence and a cached series (both with a ledger). Issuing
clients send ``next`` and ``batch`` requests, each with its own Idempotency-Key, retried at
another process on 503; one admin client lists, reads and changes series, reads ledgers and gap
reports, and creates and revokes keys. The RSS of every process is sampled as it goes. Memory is
flat when, after a warm-up, the mean of the last third of the samples is within
``MAX_GROWTH`` of the mean of the first third. It runs on a fresh database on the test
PostgreSQL (embedded under .docnum/test, or TEST_DATABASE_URL) and exits non-zero if anything
failed.
"""

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import psutil

from tests.conftest import make_tenant, new_database
from tests.support import (
    Load,
    ServiceProcess,
    Target,
    Tenant,
    create_series,
    guarantee_violations,
    services_side_by_side,
)

MAX_GROWTH = 0.25
WARM_UP = 0.2  # the share of the run whose samples are left out
SAMPLE_EVERY_SECONDS = 0.5
ADMIN_PAUSE_SECONDS = 0.02
SERIES = {
    "gapless": {"mode": "gapless"},
    "sequence": {"mode": "sequence", "ledger": True},
    "cached": {"mode": "cached", "ledger": True, "block_size": 50},
}


@dataclass
class Report:
    seconds: float
    numbers: int = 0
    keys: int = 0
    admin_requests: int = 0
    rss: dict[int, list[int]] = field(default_factory=dict)  # samples by process id
    violations: list[str] = field(default_factory=list)

    def memory(self) -> dict[int, tuple[float, float]]:
        """Mean RSS of the first and the last third of each process's samples after warm-up."""
        means = {}
        for pid, samples in self.rss.items():
            kept = samples[int(len(samples) * WARM_UP) :]
            third = max(1, len(kept) // 3)
            means[pid] = (statistics.fmean(kept[:third]), statistics.fmean(kept[-third:]))
        return means

    def lines(self) -> list[str]:
        lines = [
            f"{self.seconds:.0f} s: {self.keys} issuing requests ({self.numbers} numbers, "
            f"{self.keys / self.seconds:.0f}/s), {self.admin_requests} admin requests",
        ]
        for pid, (first, last) in self.memory().items():
            lines.append(
                f"process {pid}: RSS {first / 2**20:.1f} MB -> {last / 2**20:.1f} MB "
                f"({100 * (last / first - 1):+.1f} %, {len(self.rss[pid])} samples)"
            )
        lines += [f"VIOLATION {v}" for v in self.violations] or ["every guarantee held"]
        return lines


async def _sample_rss(running: list[ServiceProcess], report: Report, stop: asyncio.Event) -> None:
    processes = [psutil.Process(service.process.pid) for service in running]
    while not stop.is_set():
        for process in processes:
            report.rss.setdefault(process.pid, []).append(process.memory_info().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_SECONDS)


def _admin_calls(
    http: httpx.AsyncClient, url: str, target: Target, turn: int
) -> list[Callable[[], Awaitable[httpx.Response]]]:
    """What an operator does now and then, each call expected to succeed."""
    headers = target.tenant.admin
    series = f"{url}/series/{target.series}"

    async def rotate_key() -> httpx.Response:
        made = await http.post(f"{url}/keys", json={"scope": "issue"}, headers=headers)
        if made.status_code != 201:
            return made
        return await http.delete(f"{url}/keys/{made.json()['prefix']}", headers=headers)

    return [
        lambda: http.get(f"{url}/series", headers=headers),
        lambda: http.get(series, headers=headers),
        lambda: http.patch(series, json={"description": f"soak {turn}"}, headers=headers),
        lambda: http.get(f"{series}/numbers", params={"limit": "50"}, headers=headers),
        lambda: http.get(f"{series}/gaps", headers=headers),
        rotate_key,
    ]


async def _administer(
    http: httpx.AsyncClient, load: Load, report: Report, stop: asyncio.Event
) -> None:
    turn = 0
    while not stop.is_set():
        url = load.urls[turn % len(load.urls)]
        target = load.targets[turn % len(load.targets)]
        for call in _admin_calls(http, url, target, turn):
            response = await call()
            report.admin_requests += 1
            if response.status_code >= 300:
                report.violations.append(
                    f"admin {response.request.method} {response.request.url.path}: "
                    f"{response.status_code} {response.text[:200]}"
                )
            await asyncio.sleep(ADMIN_PAUSE_SECONDS)
        turn += 1


async def _make_targets(database_url: str, url: str) -> list[Target]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        tenants: list[Tenant] = [await make_tenant(pool) for _ in range(2)]
    finally:
        await pool.close()
    async with httpx.AsyncClient(base_url=url, timeout=30) as admin:
        for tenant in tenants:
            for name, fields in SERIES.items():
                await create_series(admin, tenant, name, **fields)
    return [Target(tenant, name) for tenant in tenants for name in SERIES]


async def soak(
    database_url: str, log_dir: Path, *, seconds: float, processes: int = 3, clients: int = 16
) -> Report:
    """Run the soak against ``database_url`` (migrated by the processes) and judge it."""
    report = Report(seconds)
    async with services_side_by_side(database_url, log_dir, processes) as running:
        targets = await _make_targets(database_url, running[0].url)
        load = Load([s.url for s in running], targets, clients=clients)
        stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=30) as http:
            tasks = [
                asyncio.create_task(load.run(stop)),
                asyncio.create_task(_administer(http, load, report, stop)),
                asyncio.create_task(_sample_rss(running, report, stop)),
            ]
            started = time.monotonic()
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*tasks)
            report.seconds = time.monotonic() - started
            report.keys = len(load.answered)
            report.numbers = sum(len(a.values) for a in load.answered.values())
            report.violations += [f"unexpected answer: {u[:300]}" for u in load.unexpected]
            report.violations += [f"key never answered: {key}" for key in load.given_up]
            for target in targets:
                answered = [a for a in load.answered.values() if a.target == target]
                found = await guarantee_violations(http, running[0].url, target, answered)
                report.violations += [f"{target.tenant.name} {v}" for v in found]
    for pid, (first, last) in report.memory().items():
        if last > first * (1 + MAX_GROWTH):
            report.violations.append(f"process {pid} grew from {first:.0f} to {last:.0f} bytes")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--processes", type=int, default=3, help="docnum serve processes")
    parser.add_argument("--clients", type=int, default=16, help="issuing clients at once")
    args = parser.parse_args(argv)
    with new_database() as url, tempfile.TemporaryDirectory(prefix="docnum-soak-") as logs:
        report = asyncio.run(
            soak(
                url,
                Path(logs),
                seconds=args.seconds,
                processes=args.processes,
                clients=args.clients,
            )
        )
    print("\n".join(report.lines()))
    sys.exit(1 if report.violations else 0)


if __name__ == "__main__":
    main()
