"""A bounded soak: several ``docnum serve`` processes under mixed traffic for a while, then every
guarantee checked and each process's memory judged flat or not.

    .venv/bin/python -m bench.soak                # 60 s, 3 processes, 16 issuing clients
    .venv/bin/python -m bench.soak --seconds 300
    .venv/bin/python -m bench.soak --counters 100000   # the bounded-state soak, below

Two tenants each own a gapless, a sequence and a cached series (both with a ledger). Issuing
clients send ``next`` and ``batch`` requests, each with its own Idempotency-Key, retried at
another process on 503; one admin client lists, reads and changes series, reads ledgers and gap
reports, and creates and revokes keys. The RSS of every process is sampled as it goes. Memory is
flat when, after a warm-up, the mean of the last third of the samples is within
``MAX_GROWTH`` of the mean of the first third. It runs on a fresh database on the test
PostgreSQL (embedded under .docnum/test, or TEST_DATABASE_URL) and exits non-zero if anything
failed.

With ``--counters N`` it runs the bounded-state soak instead: one process, a cached and a sequence
series whose numbers show a variable, and one request per series for each of N distinct values,
so every request makes a new counter (and, in sequence mode, a new PostgreSQL sequence). The
process keeps state for ``--cached-counters`` counters at most; its RSS, read from outside, must
stay flat once that many are in memory: the mean of the last quarter of the samples taken after
``FULL_AFTER`` times that many counters per series is within ``MAX_FLAT_GROWTH`` bytes of the mean
of the first quarter. Every number must be the first of its counter, and after the clean stop
every cached counter must read 1: the unused values of each dropped block were given back.
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
from typing import Any

import asyncpg
import httpx
import psutil

from harness.database import new_database
from harness.load import Load, Target, guarantee_violations
from harness.processes import ServiceProcess, services_side_by_side
from harness.tenants import Tenant, create_series, make_tenant

MAX_GROWTH = 0.25
WARM_UP = 0.2  # the share of the run whose samples are left out
SAMPLE_EVERY_SECONDS = 0.5
ADMIN_PAUSE_SECONDS = 0.02
SERIES: dict[str, dict[str, object]] = {
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


# The bounded-state soak: a new counter per request, one process.
DISTINCT_FORMAT = "{var:ref}-{seq}"
DISTINCT_SERIES: dict[str, dict[str, Any]] = {
    "cached": {"mode": "cached", "block_size": 10},
    "sequence": {"mode": "sequence"},
}
FULL_AFTER = 2  # times cached_counters per series: every cache full, and dropping for a while
MAX_FLAT_GROWTH = 2**20
DISTINCT_SAMPLE_SECONDS = 0.1
# What the counters of a series read once the process has stopped.
COUNTERS_OF = """
SELECT count(*) AS counters, count(*) FILTER (WHERE c.last_value <> 1) AS not_one,
       count(to_regclass('docnum_seq_' || c.id)) AS sequences
FROM counters AS c JOIN series AS s ON s.id = c.series_id
WHERE s.tenant_id = $1 AND s.name = $2
"""


@dataclass
class DistinctReport:
    counters: int  # per series
    cached_counters: int
    seconds: float = 0.0
    samples: list[tuple[int, int]] = field(default_factory=list)  # (requests answered, RSS)
    violations: list[str] = field(default_factory=list)
    database: dict[str, dict[str, int]] = field(default_factory=dict)  # by series

    def flat_samples(self) -> list[int]:
        """The RSS samples taken once every cache was full (see FULL_AFTER)."""
        full = FULL_AFTER * self.cached_counters * len(DISTINCT_SERIES)
        return [rss for answered, rss in self.samples if answered >= full]

    def memory(self) -> tuple[float, float]:
        """Mean RSS of the first and the last quarter of the samples taken with full caches."""
        kept = self.flat_samples()
        quarter = max(1, len(kept) // 4)
        return statistics.fmean(kept[:quarter]), statistics.fmean(kept[-quarter:])

    def lines(self) -> list[str]:
        requests = self.counters * len(DISTINCT_SERIES)
        first, last = self.memory()
        lines = [
            f"{self.seconds:.0f} s: {requests} requests, each for a new counter "
            f"({self.counters} per series, {requests / self.seconds:.0f}/s); "
            f"state kept for {self.cached_counters} counters per kind",
            f"RSS at start {self.samples[0][1] / 2**20:.1f} MB, with full caches "
            f"{first / 2**20:.1f} MB -> {last / 2**20:.1f} MB ({(last - first) / 2**20:+.2f} MB, "
            f"{len(self.flat_samples())} of {len(self.samples)} samples), "
            f"peak {max(rss for _, rss in self.samples) / 2**20:.1f} MB",
        ]
        lines += [f"{name}: {found}" for name, found in self.database.items()]
        lines += [f"VIOLATION {v}" for v in self.violations] or ["every check held"]
        return lines


async def soak_distinct(
    database_url: str,
    log_dir: Path,
    *,
    counters: int,
    cached_counters: int,
    clients: int = 8,
) -> DistinctReport:
    """Issue for ``counters`` new counters per series in one process and judge its memory."""
    report = DistinctReport(counters, cached_counters)
    env = {
        "DOCNUM_CACHED_COUNTERS": str(cached_counters),
        "DOCNUM_MAX_COUNTERS_PER_SERIES": str(counters),
        "DOCNUM_LOG_LEVEL": "warning",
    }
    names = list(DISTINCT_SERIES)
    async with services_side_by_side(database_url, log_dir, 1, env=env) as (service,):
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        try:
            tenant = await make_tenant(pool)
            process = psutil.Process(service.process.pid)
            work = iter(range(counters * len(names)))
            answered = 0

            async def client(http: httpx.AsyncClient) -> None:
                nonlocal answered
                for index in work:
                    name, value = names[index % len(names)], f"v{index // len(names)}"
                    response = await http.post(
                        f"/series/{name}/next", json={"variables": {"ref": value}}
                    )
                    if response.status_code != 201 or response.json()["number"] != f"{value}-1":
                        report.violations.append(f"{name} {value}: {response.text[:300]}")
                    answered += 1

            async def sample(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    report.samples.append((answered, process.memory_info().rss))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), DISTINCT_SAMPLE_SECONDS)

            async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
                for name, fields in DISTINCT_SERIES.items():
                    await create_series(http, tenant, name, format=DISTINCT_FORMAT, **fields)
                http.headers.update(tenant.issuer)
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample(stop))
                started = time.monotonic()
                await asyncio.gather(*(client(http) for _ in range(clients)))
                report.seconds = time.monotonic() - started
                stop.set()
                await sampler
            service.stop()  # a clean stop gives back what the lanes still hold
            for name in names:
                counted = await pool.fetchrow(COUNTERS_OF, tenant.id, name)
                assert counted is not None, "an aggregate returns one row"
                report.database[name] = dict(counted)
        finally:
            await pool.close()
    cached, sequence = report.database["cached"], report.database["sequence"]
    if cached["counters"] != counters or sequence["sequences"] != counters:
        report.violations.append(f"expected {counters} counters per series: {report.database}")
    if cached["not_one"]:
        report.violations.append(f"{cached['not_one']} cached counters kept unused values")
    first, last = report.memory()
    if last - first > MAX_FLAT_GROWTH:
        report.violations.append(f"RSS grew from {first:.0f} to {last:.0f} bytes with full caches")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--processes", type=int, default=3, help="docnum serve processes")
    parser.add_argument("--clients", type=int, default=16, help="issuing clients at once")
    parser.add_argument(
        "--counters",
        type=int,
        help="run the bounded-state soak instead: this many new counters per series",
    )
    parser.add_argument(
        "--cached-counters",
        type=int,
        default=10_000,
        help="with --counters: DOCNUM_CACHED_COUNTERS of the process (default 10000)",
    )
    args = parser.parse_args(argv)
    with new_database() as url, tempfile.TemporaryDirectory(prefix="docnum-soak-") as logs:
        report: Report | DistinctReport
        if args.counters:
            report = asyncio.run(
                soak_distinct(
                    url, Path(logs), counters=args.counters, cached_counters=args.cached_counters
                )
            )
        else:
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
