"""Docnum's benchmark: the real service against its references, on one embedded PostgreSQL.

Everything runs in one pass so that every ratio compares figures taken on the same machine, in
the same minutes: Docnum (``docnum serve``) and the reference app (bench/reference_app.py) at each
worker count and number of connections, driven by wrk; then pgbench on the statements behind the
modes. Docnum runs with the settings a user gets out of the box, its request log included; the
log's cost is measured apart, by alternating runs against Docnum at ``DOCNUM_LOG_LEVEL=warning``.
``--quick`` is a smoke test of the whole harness in under two minutes; its results go to
bench/out/ so they never replace the full run's bench/results.md and bench/throughput.png.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil

from app.database import start_embedded
from bench import profile
from bench.load import (
    PGBENCH_SCRIPTS,
    HttpLoad,
    ensure_wrk,
    finish_wrk,
    run_pgbench,
    run_wrk,
    served_p99_ms,
    start_wrk,
)
from bench.peers.schema import TRIGGER
from bench.reference_app import CREATE_SEQUENCE
from bench.report import (
    LogRun,
    Row,
    http_table,
    log_cost_table,
    log_cost_target,
    peer_table,
    pgbench_table,
    plot,
    target_table,
    targets,
)
from bench.servers import (
    Server,
    client_backends,
    cpu_seconds,
    cpu_used,
    docnum,
    peer_environment,
    peers,
    postgres_processes,
    reference,
)

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DATABASE = "docnum_bench"
TENANT = "bench"
SERIES_FORMAT = "INV-{YYYY}-{seq:07}"
# Settings of the second Docnum the request log's cost is measured against: no per-request line.
QUIET_LOG = {"DOCNUM_LOG_LEVEL": "warning"}
COUNTER_OF = """
SELECT c.id FROM counters c JOIN series s ON s.id = c.series_id
WHERE s.name = $1 AND s.tenant_id = (SELECT id FROM tenants WHERE name = $2)
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    count: int = 1
    idempotent: bool = False
    reference: str | None = None
    kind: str = "docnum"

    def load(self, key: str) -> HttpLoad:
        body = "{}" if self.count == 1 else json.dumps({"count": self.count})
        script = "idempotent.lua" if self.idempotent else "post.lua"
        return HttpLoad(self.path, body, key if self.kind == "docnum" else "", script)


def _next(mode: str, reference_name: str | None) -> Scenario:
    return Scenario(f"next-{mode}", f"/series/{mode}/next", reference=reference_name)


def _batch(mode: str, count: int) -> Scenario:
    return Scenario(f"batch{count}-{mode}", f"/series/{mode}/batch", count=count)


NEXT = (_next("gapless", "nextval"), _next("sequence", "nextval"), _next("cached", "constant"))
IDEMPOTENT = Scenario("next-gapless-idem", "/series/gapless/next", idempotent=True)
BATCH_1000 = (_batch("gapless", 1000), _batch("cached", 1000))
BATCH_10000 = (_batch("gapless", 10000), _batch("cached", 10000))
REFERENCES = (
    Scenario("constant", "/constant", kind="reference"),
    Scenario("nextval", "/nextval", kind="reference"),
)
PEERS = (
    Scenario("select_for_update", "/select_for_update", kind="peer"),
    Scenario("django-sequences", "/django-sequences", kind="peer"),
    Scenario("trigger", "/trigger", kind="peer"),
)
ALL_SCENARIOS = {s.name: s for s in (*NEXT, IDEMPOTENT, *BATCH_1000, *BATCH_10000)}


@dataclass(frozen=True)
class Plan:
    name: str
    connections: tuple[int, ...]
    seconds: int
    warmup: int
    scenarios: tuple[Scenario, ...]
    pgbench_seconds: int
    pgbench_warmup: int
    rss_seconds: int
    rss_every: int
    results: Path
    png: Path
    batch_connections: tuple[int, ...] | None = None  # None: the same as single numbers
    workers: tuple[int, ...] = (1, 2)
    profile_seconds: int = 10
    log_pairs: int = 5  # alternating pairs of runs measuring the request log's cost

    def connections_for(self, scenario: "Scenario") -> tuple[int, ...]:
        if scenario.count > 1 and self.batch_connections is not None:
            return self.batch_connections
        return self.connections


FULL = Plan(
    name="full",
    connections=(1, 16, 64),
    seconds=4,
    warmup=1,
    scenarios=(*NEXT, *BATCH_1000, *BATCH_10000, IDEMPOTENT),
    pgbench_seconds=4,
    pgbench_warmup=1,
    rss_seconds=60,
    rss_every=5,
    results=BENCH_DIR / "results.md",
    png=BENCH_DIR / "throughput.png",
)
QUICK = Plan(
    name="quick",
    connections=(1, 64),
    seconds=1,
    warmup=1,
    scenarios=(*NEXT, *BATCH_10000, IDEMPOTENT),
    pgbench_seconds=1,
    pgbench_warmup=0,
    rss_seconds=4,
    rss_every=1,
    results=BENCH_DIR / "out" / "results-quick.md",
    png=BENCH_DIR / "out" / "throughput-quick.png",
    # 64 batches of 10,000 rarely finish within a one-second window, and the ones left behind
    # keep the server and PostgreSQL busy for many seconds after it.
    batch_connections=(1, 16),
    profile_seconds=6,
    log_pairs=3,
)


@dataclass
class Bench:
    """What the run has set up and measured so far."""

    plan: Plan
    out: Path
    database_url: str
    postmaster_pid: int
    key: str = ""
    pgbench_counter: int = 0
    rows: list[Row] = field(default_factory=list)
    rss_samples: list[tuple[float, list[int]]] = field(default_factory=list)
    profiles: dict[str, list[str]] = field(default_factory=dict)
    log_runs: list[LogRun] = field(default_factory=list)
    done: int = 0
    total: int = 0
    last_point: float = 0.0

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self.report(row, row.scenario)

    def add_log_run(self, run: LogRun) -> None:
        self.log_runs.append(run)
        cpu = run.cpu_per_request_us
        self.report(run.row, f"log {run.level}", "" if cpu is None else f"  CPU {cpu:.0f} µs/req")

    def report(self, row: Row, what: str, extra: str = "") -> None:
        self.done += 1
        m = row.measured
        where = "db" if row.workers is None else f"{row.workers}w"
        now = time.monotonic()
        took = now - self.last_point if self.last_point else 0.0
        self.last_point = now
        print(
            f"[{self.done:3}/{self.total}] {where} {what:<20} c={row.connections:<3} "
            f"{row.per_second:9,.0f} req/s  p50 {m.p50_ms:7.2f} ms  p99 {m.p99_ms:7.2f} ms"
            + (f"  errors {m.errors}" if m.errors else "")
            + (f"  {row.note}" if row.note else "")
            + extra
            + f"  [{took:.1f} s]",
            flush=True,
        )


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _fresh_database(server_url: str) -> tuple[str, int]:
    """A new, empty benchmark database; also returns the postmaster's pid."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        postmaster = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")).ppid()
    finally:
        await conn.close()
    return with_database(server_url, DATABASE), postmaster


async def _query(url: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def create_key(database_url: str) -> str:
    """An admin key of a fresh tenant, made with the same command an operator would use."""
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("docnum")),
            "keys",
            "create",
            "--tenant",
            TENANT,
            "--scope",
            "admin",
            "--name",
            "benchmark",
        ],
        env={**os.environ, "DATABASE_URL": database_url, "DOCNUM_DEMO": "false"},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def create_series(server: Server, key: str) -> None:
    """One series per mode, plus one whose counter row pgbench advances; each issued once."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for name, mode in (
            ("gapless", "gapless"),
            ("sequence", "sequence"),
            ("cached", "cached"),
            ("pgbench", "gapless"),
        ):
            body = {"name": name, "format": SERIES_FORMAT, "mode": mode, "reset": "yearly"}
            made = client.post("/series", json=body)
            if made.status_code != 201:
                raise RuntimeError(f"creating series {name}: {made.status_code} {made.text}")
            issued = client.post(f"/series/{name}/next", json={})
            if issued.status_code != 201:
                raise RuntimeError(f"issuing from {name}: {issued.status_code} {issued.text}")


def settle(bench: Bench, server: Server, limit: float = 30.0) -> None:
    """Wait until the server and its database sessions are idle: requests wrk abandoned at the
    end of a run still finish, and must not be billed to the next run. PostgreSQL's own
    background work (autovacuum after the batches, checkpoints) is not waited for."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds([*server.tree(), *client_backends(bench.postmaster_pid)])
        time.sleep(0.2)
        after = cpu_seconds([*server.tree(), *client_backends(bench.postmaster_pid)])
        if cpu_used(before, after) < 0.02:  # under 10% of a core
            return
    print(f"  (still busy after {limit:.0f} s; measuring anyway)", flush=True)


def measure(bench: Bench, server: Server, scenario: Scenario, connections: int) -> Row:
    load = scenario.load(bench.key)
    plan = bench.plan
    settle(bench, server)
    run_wrk(server.url, load, connections, plan.warmup)
    postgres = postgres_processes(bench.postmaster_pid)
    server_before, pg_before = cpu_seconds(server.tree()), cpu_seconds(postgres)
    log_offset = server.service.log.stat().st_size
    started = time.monotonic()
    measured = run_wrk(server.url, load, connections, plan.seconds)
    wall = time.monotonic() - started
    is_docnum = scenario.kind == "docnum"
    served_p99 = served_p99_ms(server.service.log, log_offset) if is_docnum else None
    server_after = cpu_seconds(server.tree())
    pg_after = cpu_seconds(postgres_processes(bench.postmaster_pid))
    return Row(
        scenario=scenario.name,
        kind=scenario.kind,
        workers=server.workers,
        connections=connections,
        numbers_per_request=scenario.count,
        measured=measured,
        rss_mb=server.rss() / 2**20,
        server_cpu=100 * cpu_used(server_before, server_after) / wall,
        postgres_cpu=100 * cpu_used(pg_before, pg_after) / wall,
        reference=scenario.reference,
        note="" if measured.requests else "(no answer within the run)",
        served_p99_ms=served_p99,
    )


def matrix(bench: Bench, server: Server, scenarios: tuple[Scenario, ...]) -> None:
    for scenario in scenarios:
        for connections in bench.plan.connections_for(scenario):
            bench.add(measure(bench, server, scenario, connections))


def log_cost_phase(bench: Bench) -> Iterator[str]:
    """cached next at the most connections on two Docnums side by side, one with the default
    settings and one at ``DOCNUM_LOG_LEVEL=warning``, in alternating pairs of runs (each pair in
    the other order than the one before, so a drift of the machine's load favours neither). The
    one not measured is idle. The log's cost is the ratio of the medians."""
    plan = bench.plan
    workers = plan.workers[-1]
    scenario = ALL_SCENARIOS["next-cached"]
    yield f"request log cost: docnum, {workers} worker(s), default settings and log level warning"
    with (
        docnum(bench.database_url, bench.out, workers) as default,
        docnum(bench.database_url, bench.out, workers, env=QUIET_LOG) as quiet,
    ):
        prepare(bench, default)
        for pair in range(plan.log_pairs):
            order = [("default", default), ("warning", quiet)]
            for level, server in order if pair % 2 == 0 else reversed(order):
                row = measure(bench, server, scenario, max(plan.connections))
                bench.add_log_run(LogRun(pair, level, row))
    found = log_cost_target(bench.log_runs)
    print("\n".join(["", *log_cost_table(bench.log_runs), "", f"{found.label}: {found.verdict()}"]))


def rss_run(bench: Bench, server: Server) -> None:
    """cached next at the most connections for a while, sampling each worker's RSS."""
    plan = bench.plan
    load = ALL_SCENARIOS["next-cached"].load(bench.key)
    print(f"RSS run: next-cached, {plan.rss_seconds} s, sampling every {plan.rss_every} s")
    settle(bench, server)
    started = time.monotonic()
    running = start_wrk(server.url, load, max(plan.connections), plan.rss_seconds)
    samples: list[tuple[float, list[int]]] = []
    for tick in range(1, plan.rss_seconds // plan.rss_every):
        time.sleep(max(0.0, started + tick * plan.rss_every - time.monotonic()))
        samples.append((time.monotonic() - started, server.worker_rss()))
    finish_wrk(running, bench.out / "rss-run.wrk.txt")
    bench.rss_samples = samples
    for at, sizes in samples:
        print(f"  t={at:5.1f}s  " + "  ".join(f"{size / 2**20:7.1f} MB" for size in sizes))


def rss_growth(samples: list[tuple[float, list[int]]]) -> dict[int, float]:
    """Percent change of each worker's RSS from the first sample to the last."""
    if len(samples) < 2:
        return {}
    first, last = samples[0][1], samples[-1][1]
    return {i + 1: 100 * (b / a - 1) for i, (a, b) in enumerate(zip(first, last, strict=True)) if a}


def profile_run(bench: Bench, server: Server, name: str, native: bool) -> None:
    """One scenario at the most connections for a while, with py-spy attached to the server."""
    plan = bench.plan
    scenario = ALL_SCENARIOS[name]
    load = scenario.load(bench.key)
    connections = max(plan.connections)
    svg = bench.out / f"profile-{name}.svg"
    print(f"profiling {name} ({server.workers}w, c={connections}) for {plan.profile_seconds} s")
    settle(bench, server)
    run_wrk(server.url, load, connections, plan.warmup)
    running = start_wrk(server.url, load, connections, plan.profile_seconds + 1)
    spy = profile.start(server.pid, plan.profile_seconds, svg, native=native)
    spy.wait(timeout=plan.profile_seconds + 60)
    measured = finish_wrk(running)
    if spy.returncode != 0 or not svg.exists():
        log = svg.with_suffix(".log").read_text()
        raise RuntimeError(f"py-spy failed (exit {spy.returncode}):\n{log}")
    summary = profile.summarize(svg)
    lines = [
        f"{name}, {server.workers} worker(s), {connections} connections, under py-spy: "
        f"{measured.per_second:,.0f} req/s (py-spy slows the server; not a benchmark figure)",
        f"flame graph: {svg.relative_to(ROOT) if svg.is_relative_to(ROOT) else svg}",
        *summary.lines(),
    ]
    (bench.out / f"profile-{name}.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    bench.profiles[name] = lines


def pgbench_phase(bench: Bench) -> None:
    work = bench.out / "pgbench"
    work.mkdir(exist_ok=True)
    variables = {"counter": str(bench.pgbench_counter)}
    plan = bench.plan
    for script in PGBENCH_SCRIPTS:
        for clients in plan.connections:
            if script.setup is not None:
                asyncio.run(_execute(bench.database_url, script.setup.read_text()))
            if plan.pgbench_warmup:
                run_pgbench(
                    bench.database_url, script, clients, plan.pgbench_warmup, work, variables
                )
            measured = run_pgbench(
                bench.database_url, script, clients, plan.pgbench_seconds, work, variables
            )
            note = "" if measured.requests else "(no transaction within the run)"
            bench.add(
                Row(script.name, "pgbench", None, clients, script.numbers, measured, note=note)
            )


def machine(database_url: str) -> list[str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    version = asyncio.run(_query(database_url, "SHOW server_version"))
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu}, nproc {os.cpu_count()}",
        f"- load average at the end of the run: {load}",
        f"- PostgreSQL {version} (embedded, bench/out/postgres)",
        f"- Python {platform.python_version()}, {(wrk.stdout or wrk.stderr).splitlines()[0]}",
    ]


def write_results(bench: Bench, elapsed: float, command: str) -> None:
    plan = bench.plan
    rows = bench.rows
    growth = rss_growth(bench.rss_samples)
    batch_top = max(plan.batch_connections or plan.connections)
    found = [
        *targets(rows, plan.workers, max(plan.connections), batch_top, growth),
        log_cost_target(bench.log_runs),
    ]
    lines = [
        "# Docnum benchmark results",
        "",
        f"`{command}` ({plan.name} run, {elapsed / 60:.1f} min; wrk {plan.seconds} s per point "
        f"after a {plan.warmup} s warm-up). How to read this: bench/README.md.",
        "",
        "## Machine",
        "",
        *machine(bench.database_url),
        "",
        "## Targets",
        "",
        *target_table(found),
        "",
        "## HTTP (wrk)",
        "",
        "Ratios compare with the reference at the same workers and connections: `constant` is a "
        "FastAPI endpoint that answers a fixed body (the framework ceiling), `nextval` a bare "
        "FastAPI + asyncpg endpoint running one `SELECT nextval(...)`. CPU is a percentage of one "
        "core over the measured seconds. `served p99` is Docnum's own p99, the `duration_ms` of "
        "its access lines (from its request layer to the answer handed to uvicorn): wrk's p99 "
        "less the time a request waited in sockets and in the server's queue first.",
        "",
        *http_table(rows),
        "",
        "## Docnum ÷ peers",
        "",
        "What users run today, on the same PostgreSQL in the same run (bench/peers: Django + "
        "gunicorn, 4 sync workers): Docnum's req/s at the most connections divided by the peer's.",
        "",
        *peer_table(rows, plan.workers, max(plan.connections)),
        "",
        "## PostgreSQL alone (pgbench, prepared statements)",
        "",
        *pgbench_table(rows),
        "",
        "## Request log cost",
        "",
        "cached next on two Docnums side by side, one with the default settings (a JSON line per "
        "request) and one at `DOCNUM_LOG_LEVEL=warning` (none), in alternating pairs of runs; the "
        "target compares the medians.",
        "",
        *log_cost_table(bench.log_runs),
        "",
    ]
    if bench.rss_samples:
        lines += ["## Worker RSS during the cached-next run", "", "| t (s) | RSS per worker (MB) |"]
        lines.append("|--:|---|")
        for at, sizes in bench.rss_samples:
            lines.append(f"| {at:.0f} | {', '.join(f'{s / 2**20:.1f}' for s in sizes)} |")
        lines.append("")
    for name, summary in bench.profiles.items():
        lines += [f"## Profile: {name}", "", "```", *summary, "```", ""]
    plan.results.write_text("\n".join(lines))
    (bench.out / f"results-{plan.name}.json").write_text(
        json.dumps([{**asdict(r), "per_second": r.per_second} for r in rows], indent=1)
    )
    plot(rows, plan.workers, plan.png)
    top = max(plan.connections)
    print(
        "\n".join(
            [
                "",
                *target_table(found),
                "",
                *http_table(rows),
                "",
                *peer_table(rows, plan.workers, top),
                "",
                *pgbench_table(rows),
            ]
        )
    )
    print(f"\nwrote {plan.results} and {plan.png}")


def count_points(plan: Plan) -> int:
    per_workers = sum(len(plan.connections_for(s)) for s in (*plan.scenarios, *REFERENCES))
    pgbench = len(PGBENCH_SCRIPTS) * len(plan.connections)
    peer_points = len(PEERS) * len(plan.connections)
    return per_workers * len(plan.workers) + 2 * plan.log_pairs + pgbench + peer_points


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def peers_phase(bench: Bench) -> Iterator[str]:
    """The forum's patterns under gunicorn on the same PostgreSQL: Django creates their tables,
    then the trigger and the counter row the thread initialises by hand are added."""
    yield "peers: Django + gunicorn, select_for_update, django-sequences, trigger"
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--run-syncdb", "--verbosity", "0"],
        cwd=ROOT,
        env=peer_environment(bench.database_url),
        check=True,
    )
    asyncio.run(_execute(bench.database_url, TRIGGER))
    with peers(bench.database_url, bench.out) as server:
        matrix(bench, server, PEERS)


def prepare(bench: Bench, server: Server) -> None:
    """The key, the series, pgbench's counter row and the reference sequence, once per run."""
    if bench.key:
        return
    bench.key = create_key(bench.database_url)
    create_series(server, bench.key)
    counter = asyncio.run(_query(bench.database_url, COUNTER_OF, "pgbench", TENANT))
    bench.pgbench_counter = int(str(counter))
    asyncio.run(_query(bench.database_url, CREATE_SEQUENCE))


def profile_phase(bench: Bench, profiles: list[str], native: bool) -> Iterator[str]:
    workers = bench.plan.workers[0]
    yield f"docnum, {workers} worker(s), profiling only"
    with docnum(bench.database_url, bench.out, workers) as server:
        prepare(bench, server)
        for name in profiles:
            profile_run(bench, server, name, native)


def phases(bench: Bench, profiles: list[str], native: bool) -> Iterator[str]:
    plan = bench.plan
    for workers in plan.workers:
        yield f"docnum, {workers} worker(s)"
        with docnum(bench.database_url, bench.out, workers) as server:
            prepare(bench, server)
            matrix(bench, server, plan.scenarios)
            if workers == plan.workers[0]:
                for name in profiles:
                    profile_run(bench, server, name, native)
            if workers == plan.workers[-1]:
                rss_run(bench, server)
        yield f"references, {workers} worker(s)"
        with reference(bench.database_url, bench.out, workers) as server:
            matrix(bench, server, REFERENCES)
    yield from peers_phase(bench)
    yield from log_cost_phase(bench)
    yield "pgbench"
    pgbench_phase(bench)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    root.add_argument("--quick", action="store_true", help="smoke test: fewer, shorter points")
    root.add_argument(
        "--profile",
        action="append",
        default=[],
        choices=sorted(ALL_SCENARIOS),
        metavar="SCENARIO",
        help="also record a py-spy flame graph of the server during SCENARIO (repeatable): "
        + ", ".join(sorted(ALL_SCENARIOS)),
    )
    root.add_argument(
        "--profile-only",
        action="store_true",
        help="with --profile: skip the measurements, only profile (1 worker)",
    )
    root.add_argument(
        "--native", action="store_true", help="with --profile: include native (C) frames"
    )
    root.add_argument(
        "--log-cost-only",
        action="store_true",
        help="only measure the request log's cost (alternating pairs of cached-next runs)",
    )
    return root


def main(argv: list[str] | None = None) -> None:
    arguments = parser()
    args = arguments.parse_args(argv)
    if args.profile_only and not args.profile:
        arguments.error("--profile-only needs at least one --profile SCENARIO")
    plan = QUICK if args.quick else FULL
    out = BENCH_DIR / "out"
    out.mkdir(exist_ok=True)
    for old_log in [*out.glob("docnum-*.log"), *out.glob("reference-*.log")]:
        old_log.unlink()
    ensure_wrk()
    if args.profile:
        profile.py_spy()
    started = time.monotonic()
    server_url = start_embedded(out)
    database_url, postmaster = asyncio.run(_fresh_database(server_url))
    bench = Bench(plan, out, database_url, postmaster, total=count_points(plan))
    if args.log_cost_only:
        bench.total = 2 * plan.log_pairs
        run = log_cost_phase(bench)
    elif args.profile_only:
        run = profile_phase(bench, args.profile, args.native)
    else:
        run = phases(bench, args.profile, args.native)
    try:
        for phase in run:
            print(f"== {phase} ({time.monotonic() - started:.0f} s in)", flush=True)
            bench.last_point = time.monotonic()
        if not (args.profile_only or args.log_cost_only):
            command = "python -m bench" + (" --quick" if args.quick else "")
            write_results(bench, time.monotonic() - started, command)
    finally:
        asyncio.run(_query(server_url, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    print(f"done in {time.monotonic() - started:.0f} s")
