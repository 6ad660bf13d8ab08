"""Helpers shared by the tests: tenants, series, and real service processes."""

import asyncio
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import httpx

from app.definition import Series
from app.issuing import Answer, Issuer

T = TypeVar("T")


# The metrics token of the tests' app: a scrape that presents it sees each tenant's series.
METRICS_TOKEN = "dXNlZC1vbmx5LWJ5LXRoZS10ZXN0cy1vZi1kb2NudW0"


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous fixture code, on a loop of its own."""
    return asyncio.new_event_loop().run_until_complete(coroutine)


@dataclass(frozen=True)
class Tenant:
    name: str
    id: int
    admin_key: str
    issue_key: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    @property
    def issuer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issue_key}"}


async def create_series(
    client: httpx.AsyncClient, tenant: Tenant, name: str, **fields: Any
) -> dict[str, Any]:
    body = {"name": name, "format": fields.pop("format", "T-{seq}"), **fields}
    response = await client.post("/series", json=body, headers=tenant.admin)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem of this status and type, with nothing internal in it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}", body
    assert body["status"] == status
    assert body["title"] and body["detail"], body
    assert "Traceback" not in response.text
    return body


async def rewrite_format(pool: asyncpg.Pool, tenant: Tenant, name: str, source: str) -> None:
    """Replace a series' format behind the service's back, history included, as a series changed
    before the service kept formats or checked them would have been; processes are told."""
    async with pool.acquire() as conn, conn.transaction():
        series_id = await conn.fetchval(
            "UPDATE series SET format = $3, version = version + 1"
            " WHERE tenant_id = $1 AND name = $2 RETURNING id",
            tenant.id,
            name,
            source,
        )
        await conn.execute(
            "UPDATE series_formats SET format = $2 WHERE series_id = $1", series_id, source
        )
        await conn.execute("SELECT pg_notify('docnum_series', $1)", f"{tenant.id}:{name}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


DATABASE_VARIABLES = ("DATABASE_URL", "DOCNUM_DATABASE_URL")


@dataclass
class ServiceProcess:
    """A real ``docnum serve`` process listening on a loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_service(
    database_url: str | None,
    log_dir: Path,
    *,
    workers: int = 1,
    env: dict[str, str | None] | None = None,
    output: int | None = None,
) -> ServiceProcess:
    """Start ``docnum serve``; with no database_url it runs its own embedded PostgreSQL. Its
    standard output and error go to ``log``, or to the file descriptor ``output`` when given.
    A variable that ``env`` sets to None is left unset."""
    port = free_port()
    log = log_dir / f"docnum-{port}.log"
    chosen = {
        **{k: v for k, v in os.environ.items() if k not in DATABASE_VARIABLES},
        **({"DATABASE_URL": database_url} if database_url else {}),
        "DOCNUM_DEMO": "false",
        "DOCNUM_DATA_DIR": str(log_dir),
        **(env or {}),
    }
    environment = {name: value for name, value in chosen.items() if value is not None}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=environment,
            stdout=out if output is None else output,
            stderr=subprocess.STDOUT,
        )
    service = ServiceProcess(process, port, log)
    wait_until_ready(service)
    return service


def wait_until_ready(service: ServiceProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"docnum serve exited:\n{service.log.read_text()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    service.stop()
    raise RuntimeError(f"docnum serve did not become ready:\n{service.log.read_text()}")


@contextmanager
def services(
    database_url: str, log_dir: Path, count: int, **options: Any
) -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    try:
        for _ in range(count):
            started.append(start_service(database_url, log_dir, **options))
        yield started
    finally:
        for service in started:
            service.stop()


# PgBouncer in transaction pooling mode, as Debian packages it (`make pgbouncer` installs it).
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PGBOUNCER_CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {userlist}
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
server_login_retry = 1
server_connect_timeout = 2
"""
# How a service may reach PostgreSQL in the tests that run both ways.
ROUTES = ("direct", "pgbouncer")


def _pgbouncer_user() -> list[str]:
    """PgBouncer refuses to run as root: then it runs as the embedded PostgreSQL's own user, who
    may open its socket directory (or nobody, when no embedded server ever ran here)."""
    if os.geteuid() != 0:
        return []
    try:
        return ["-u", pwd.getpwnam("embedded_postgres").pw_name]
    except KeyError:
        return ["-u", "nobody"]


@contextmanager
def pgbouncer(database_url: str) -> Iterator[str]:
    """A PgBouncer in transaction pooling mode in front of the server of ``database_url``, on a
    free loopback port; yields the URL of the same database through it."""
    assert os.path.exists(PGBOUNCER), "PgBouncer is not installed: run `make pgbouncer`"
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = parts.hostname or query["host"][0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    user = parts.username or "postgres"
    listen_port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="docnum-pgbouncer-"))
    directory.chmod(0o755)  # readable by the user PgBouncer runs as
    userlist = directory / "userlist.txt"
    userlist.write_text(f'"{user}" "{parts.password or ""}"\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        PGBOUNCER_CONFIG.format(host=host, port=port, listen_port=listen_port, userlist=userlist)
    )
    for path in (userlist, config):
        path.chmod(0o644)
    log = directory / "pgbouncer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PGBOUNCER, *_pgbouncer_user(), str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, f"pgbouncer exited:\n{log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", listen_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"pgbouncer did not listen:\n{log.read_text()}"
                time.sleep(0.05)
        through = parts._replace(netloc=f"{user}@127.0.0.1:{listen_port}", query="")
        yield urlunsplit(through)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def reached_by(route: str, database_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The DATABASE_URL and extra environment for a service that reaches ``database_url``
    directly, or through PgBouncer in transaction pooling mode (LISTEN and migrations direct)."""
    if route == "direct":
        yield database_url, {}
        return
    with pgbouncer(database_url) as url:
        yield (
            url,
            {
                "DOCNUM_TRANSACTION_POOLING": "true",
                "DOCNUM_STATEMENT_CACHE_SIZE": "0",
                "DOCNUM_DIRECT_DATABASE_URL": database_url,
            },
        )


# Multi-process tests share one PostgreSQL with the rest of the suite: a few connections per
# process are plenty on two cores and leave room for the others.
SMALL_POOL = {"DOCNUM_POOL_MAX_SIZE": "4"}


@asynccontextmanager
async def services_side_by_side(
    database_url: str, log_dir: Path, count: int, **options: Any
) -> AsyncIterator[list[ServiceProcess]]:
    """Like ``services``, but started at the same time; processes a test appends to the list are
    stopped too."""
    results = await asyncio.gather(
        *(asyncio.to_thread(start_service, database_url, log_dir, **options) for _ in range(count)),
        return_exceptions=True,
    )
    started = [r for r in results if isinstance(r, ServiceProcess)]
    try:
        for result in results:
            if isinstance(result, BaseException):
                raise result
        yield started
    finally:
        for service in started:
            service.stop()


# Retrying load and the guarantees to check after it, shared by the fault tests and the soak.

RETRY_PAUSE_SECONDS = 0.05
# Transport errors raised before the request left the client: the server never saw it.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class Target:
    """A series to issue from, and the tenant that owns it."""

    tenant: Tenant
    series: str


async def series_per_mode(
    client: httpx.AsyncClient, tenant: Tenant, *, block_size: int
) -> list[Target]:
    """One series per mode, each with a ledger, so every value can be accounted for."""
    await create_series(client, tenant, "gapless", mode="gapless")
    await create_series(client, tenant, "sequence", mode="sequence", ledger=True)
    await create_series(client, tenant, "cached", mode="cached", ledger=True, block_size=block_size)
    return [Target(tenant, name) for name in ("gapless", "sequence", "cached")]


@dataclass
class Answered:
    """What one Idempotency-Key finally got, and what it took."""

    target: Target
    key: str
    path: str
    body: dict[str, Any]
    client: int
    url: str  # the process that answered
    order: int
    period: str
    values: list[int]
    attempts: int
    lost: int  # attempts that reached the server but whose answer never came back
    replayed: bool


@dataclass
class Load:
    """Clients issuing numbers over real HTTP, every request with an Idempotency-Key of its own.

    Each client sends one request at a time, so its answers are in time order. A request that
    gets no answer (refused, dropped, timed out), a 503 problem or an in-flight 409 is sent again
    with the same key and body to the next process, as a careful client would, until it is
    answered or ``patience`` runs out (then its key is in ``given_up``). Any other answer, and a
    503 that is not a problem with ``Retry-After``, is kept in ``unexpected``.
    """

    urls: list[str]  # a test may swap in the address of a restarted process while this runs
    targets: list[Target]
    clients: int = 16
    batch_every: int = 4
    timeout: float = 5.0
    patience: float = 30.0
    answered: dict[str, Answered] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    # Why attempts were retried: an exception name or "<status> <problem type>".
    retried: Counter[str] = field(default_factory=Counter)
    _prefix: str = field(default_factory=lambda: secrets.token_hex(3))

    async def run(self, stop: asyncio.Event) -> None:
        """Issue until ``stop`` is set; each client finishes the key it is on."""
        limits = httpx.Limits(max_connections=self.clients * 2)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as http:
            await asyncio.gather(*(self._client(http, i, stop) for i in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, client: int, stop: asyncio.Event) -> None:
        sent = 0
        while not stop.is_set():
            target = self.targets[(client + sent) % len(self.targets)]
            batch = sent % self.batch_every == self.batch_every - 1
            path, body = ("batch", {"count": 3}) if batch else ("next", {})
            await self.issue(http, client, target, f"{self._prefix}-{client}-{sent}", path, body)
            sent += 1

    async def issue(
        self,
        http: httpx.AsyncClient,
        client: int,
        target: Target,
        key: str,
        path: str,
        body: dict[str, Any],
    ) -> Answered | None:
        started = time.monotonic()
        attempts = lost = 0
        headers = {**target.tenant.issuer, "Idempotency-Key": key}
        while time.monotonic() - started < self.patience:
            url = self.urls[(client + attempts) % len(self.urls)]
            attempts += 1
            try:
                response = await http.post(
                    f"{url}/series/{target.series}/{path}", json=body, headers=headers
                )
            except httpx.TransportError as error:
                self.retried[type(error).__name__] += 1
                lost += not isinstance(error, NOT_SENT)
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            if response.status_code == 201:
                payload = response.json()
                answer = Answered(
                    target=target,
                    key=key,
                    path=path,
                    body=body,
                    client=client,
                    url=url,
                    order=len(self.answered),
                    period=payload["period"],
                    values=payload["values"] if path == "batch" else [payload["value"]],
                    attempts=attempts,
                    lost=lost,
                    replayed=response.headers.get("Idempotent-Replayed") == "true",
                )
                self.answered[key] = answer
                return answer
            if not _is_retryable(response):
                self.unexpected.append(f"{url} {path} {response.status_code}: {response.text}")
                return None
            self.retried[f"{response.status_code} {response.json()['type']}"] += 1
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
        self.given_up.append(key)
        return None

    async def replay_violations(self, http: httpx.AsyncClient, keys: list[str]) -> list[str]:
        """Ask again for each key, at another process: the same numbers must come back."""

        async def again(index: int, key: str) -> str | None:
            first = self.answered[key]
            url = self.urls[(first.client + index + 1) % len(self.urls)]
            response = await http.post(
                f"{url}/series/{first.target.series}/{first.path}",
                json=first.body,
                headers={**first.target.tenant.issuer, "Idempotency-Key": key},
            )
            payload = response.json() if response.status_code == 201 else {}
            values = payload.get("values", [payload.get("value")])
            if response.headers.get("Idempotent-Replayed") == "true" and values == first.values:
                return None
            return f"{key}: first {first.values}, again {response.status_code} {values}"

        found = await asyncio.gather(*(again(i, key) for i, key in enumerate(keys)))
        return [problem for problem in found if problem is not None]


def _is_retryable(response: httpx.Response) -> bool:
    if response.headers.get("content-type") != "application/problem+json":
        return False
    kind = response.json().get("type")
    if response.status_code == 503:
        return "Retry-After" in response.headers
    return response.status_code == 409 and kind == "/problems/idempotency-key-in-flight"


async def eventually(check: Callable[[], bool], what: str, within: float = 20.0) -> None:
    """Wait until ``check()`` holds, polling; fail the test if it does not within ``within`` s."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.02)


async def load_resumes(load: Load, urls: list[str], answers: int, within: float) -> None:
    """After a fault: every process answers again within ``within`` s, then ``answers`` more."""
    since = len(load.answered)
    await eventually(
        lambda: {a.url for a in load.answered.values() if a.order >= since} == set(urls),
        "every process issues again",
        within=within,
    )
    await eventually(lambda: len(load.answered) >= since + answers, "load goes on")


# One series per way a request reaches the database: the gapless queue, coalesced sequence
# values, a cached block reservation, and a transaction of its own (an Idempotency-Key).
ISSUING_PATHS: dict[str, dict[str, object]] = {
    "gapless": {"mode": "gapless"},
    "sequence": {"mode": "sequence"},
    "cached": {"mode": "cached", "block_size": 1},
    "keyed": {"mode": "sequence", "ledger": True},
}


async def issue_by_path(
    client: httpx.AsyncClient, tenant: Tenant, name: str, key: str
) -> httpx.Response:
    """``next`` on one of :data:`ISSUING_PATHS`; only ``keyed`` sends the Idempotency-Key."""
    headers = {**tenant.issuer, **({"Idempotency-Key": key} if name == "keyed" else {})}
    return await client.post(f"/series/{name}/next", headers=headers)


async def issues_again(client: httpx.AsyncClient, tenant: Tenant, within: float) -> None:
    """The app is ready and issues on every path within ``within`` s, answering 503 meanwhile."""
    deadline = time.monotonic() + within
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "not ready again"
        await asyncio.sleep(0.05)
    for name in ISSUING_PATHS:
        while (response := await issue_by_path(client, tenant, name, "again")).status_code != 201:
            assert_problem(response, 503, "unavailable")
            assert time.monotonic() < deadline, f"{name} does not issue again"
            await asyncio.sleep(0.05)


async def ledger_values(http: httpx.AsyncClient, url: str, target: Target) -> list[tuple[str, int]]:
    """Every (period, value) in the series' ledger, read page by page as an operator would."""
    values: list[tuple[str, int]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        response = await http.get(
            f"{url}/series/{target.series}/numbers", params=params, headers=target.tenant.admin
        )
        assert response.status_code == 200, response.text
        page = response.json()
        values.extend((item["period"], item["value"]) for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return values


async def guarantee_violations(
    http: httpx.AsyncClient, url: str, target: Target, answered: list[Answered]
) -> list[str]:
    """What the answers and the ledger of one series show against its mode's guarantees.

    All modes: no value reaches two keys. gapless and sequence: each client's answers increase
    (a value is issued after every value its client already received). With a ledger: every
    value a client received is recorded and, since every key was retried until answered, every
    recorded value reached a client; ``/gaps`` reports exactly the values up to the counter's top
    that the ledger lacks. gapless: there are none.
    """
    response = await http.get(f"{url}/series/{target.series}", headers=target.tenant.admin)
    assert response.status_code == 200, response.text
    series = response.json()
    name, mode, step = target.series, series["mode"], series["step"]
    found: list[str] = []
    received = [(a.period, v) for a in answered for v in a.values]
    twice = sorted(v for v, times in Counter(received).items() if times > 1)
    if twice:
        found.append(f"{name}: values issued to two keys: {twice[:20]}")
    if mode != "cached":
        highest: dict[tuple[int, str], int] = {}
        for answer in sorted(answered, key=lambda a: a.order):
            seen = highest.get((answer.client, answer.period))
            if seen is not None and min(answer.values) <= seen:
                found.append(f"{name}: client {answer.client} got {answer.values} after {seen}")
            highest[(answer.client, answer.period)] = max(answer.values)
    if not series["ledger"]:
        return found
    recorded = set(await ledger_values(http, url, target))
    if set(received) - recorded:
        found.append(f"{name}: received, not recorded: {sorted(set(received) - recorded)[:20]}")
    if recorded - set(received):
        found.append(f"{name}: recorded, never received: {sorted(recorded - set(received))[:20]}")
    for period in sorted({a.period for a in answered}):
        response = await http.get(
            f"{url}/series/{name}/gaps", params={"period": period}, headers=target.tenant.admin
        )
        assert response.status_code == 200, response.text
        report = response.json()
        top = series["start"] - step if report["last_value"] is None else report["last_value"]
        kept = {v for p, v in recorded if p == period}
        lacking = set(range(series["start"], top + 1, step)) - kept
        reported = {v for gap in report["gaps"] for v in range(gap["first"], gap["last"] + 1, step)}
        if reported != lacking or report["missing"] != len(lacking):
            found.append(f"{name} {period}: /gaps says {report['gaps']}, lacking {sorted(lacking)}")
        if mode == "gapless" and lacking:
            found.append(f"{name} {period}: gapless series has holes: {sorted(lacking)[:20]}")
    return found


# Locks the counter rows of a series, as a transaction stuck on them would.
LOCK_COUNTERS = """
SELECT c.id FROM counters AS c JOIN series AS s ON s.id = c.series_id
WHERE s.tenant_id = $1 AND s.name = $2
FOR UPDATE OF c
"""
# Service connections waiting for a lock in this database, and those waiting for the caller's.
LOCK_WAITERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'docnum' AND wait_event_type = 'Lock'
"""
BLOCKED_BY_ME = """
SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))
"""


# An uncommitted ledger row for the first value of a series. The transaction that issues that
# value then waits for it after taking the value from the counter, before it can commit.
HOLD_FIRST_LEDGER_ROW = """
INSERT INTO numbers (series_id, period, value, number, date)
SELECT id, 'all', start, 'held by a test', current_date FROM series
WHERE tenant_id = $1 AND name = $2
"""


async def hold_first_ledger_row(conn: asyncpg.Connection, target: Target) -> None:
    """Stop the first issue of ``target`` between taking its value and committing, for as long
    as the caller's open transaction lasts."""
    assert conn.is_in_transaction()
    await conn.execute(HOLD_FIRST_LEDGER_ROW, target.tenant.id, target.series)


async def lock_counters(conn: asyncpg.Connection, target: Target) -> None:
    """Take the counter row locks of ``target`` in the caller's open transaction."""
    assert conn.is_in_transaction()
    assert await conn.fetch(LOCK_COUNTERS, target.tenant.id, target.series), "no counter yet"


async def lock_waiters(
    conn: asyncpg.Connection, at_least: int, *, mine: bool = True, within: float = 10
) -> int:
    """Wait until ``at_least`` connections wait for a lock that ``conn`` holds (``mine``) or for
    any lock; return how many do."""
    query = BLOCKED_BY_ME if mine else LOCK_WAITERS
    deadline = time.monotonic() + within
    while (waiting := int(await conn.fetchval(query))) < at_least:
        assert time.monotonic() < deadline, f"{waiting} connections wait for a lock"
        await asyncio.sleep(0.02)
    return waiting


@asynccontextmanager
async def recording_pool(
    database_url: str, *, max_size: int = 4, **server_settings: str
) -> AsyncIterator[tuple[asyncpg.Pool, list[str]]]:
    """A real pool of its own whose connections note every statement they send, in order."""
    sent: list[str] = []

    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: sent.append(record.query))

    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=max_size, init=init, server_settings=server_settings
    )
    try:
        yield pool, sent
    finally:
        await pool.close()


def issue_plain(
    issuer: Issuer,
    series: Series,
    count: int = 1,
    variables: dict[str, str] | None = None,
) -> Coroutine[Any, Any, Answer]:
    """Issue as the routes do, without an Idempotency-Key."""
    return issuer.issue(
        series,
        count=count,
        date=None,
        variables=variables or {},
        claim=None,
        respond=lambda issued: b"",
    )


# A TCP proxy in front of PostgreSQL that can stop forwarding without closing anything.


async def pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *gates: asyncio.Event,
    watch: Callable[[bytes], None] | None = None,
) -> None:
    """Copy ``reader`` to ``writer`` until the end, passing each chunk (and the end) only while
    every gate is open; ``watch`` sees each chunk first."""
    while data := await reader.read(65_536):
        if watch is not None:
            watch(data)
        for gate in gates:
            await gate.wait()
        writer.write(data)
        await writer.drain()
    for gate in gates:
        await gate.wait()


class StallingProxy:
    """A loopback TCP proxy to the PostgreSQL of ``database_url`` (TCP or Unix socket).

    ``freeze()`` stops forwarding, both ways, on every connection, old and new, and closes none:
    what a client sees when the database host vanishes or the network partitions. ``thaw()``
    resumes. ``stall_answers_after(marker)``: the next connection that sends bytes containing
    ``marker`` gets no answer any more (its statement reached the server; the answer is lost).
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        parts = urlsplit(database_url)
        socket_dir = dict(parse_qsl(parts.query)).get("host")
        port = parts.port or 5432
        self._unix = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir else None
        self._tcp = (parts.hostname or "127.0.0.1", port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.stalled = asyncio.Event()  # set when a connection's answers were stalled
        self._marker: bytes | None = None
        self._links: set[asyncio.Task[None]] = set()
        self.url = ""

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def stall_answers_after(self, marker: bytes) -> None:
        self._marker = marker
        self.stalled.clear()

    @asynccontextmanager
    async def running(self) -> AsyncIterator["StallingProxy"]:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        parts = urlsplit(self.database_url)
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
        self.url = urlunsplit(parts._replace(netloc=netloc, query=query))
        try:
            async with server:
                yield self
        finally:
            self.thaw()
            for link in list(self._links):
                link.cancel()
            await asyncio.gather(*self._links, return_exceptions=True)

    async def _relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        to_server: asyncio.StreamWriter | None = None
        try:
            await self.flowing.wait()
            if self._unix:
                server, to_server = await asyncio.open_unix_connection(self._unix)
            else:
                server, to_server = await asyncio.open_connection(*self._tcp)
            answers = asyncio.Event()
            answers.set()

            def watch(data: bytes) -> None:
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    answers.clear()
                    self.stalled.set()

            directions = [
                asyncio.create_task(pipe(client, to_server, self.flowing, watch=watch)),
                asyncio.create_task(pipe(server, to_client, self.flowing, answers)),
            ]
            try:
                await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for direction in directions:
                    direction.cancel()
        except (OSError, asyncio.CancelledError):
            # Cancelled when the proxy stops: end quietly, as asyncio's stream server expects of
            # its handlers (it reports a cancelled one as an error).
            pass
        finally:
            for writer in (to_client, to_server):
                if writer is not None:
                    writer.close()
            self._links.discard(task)
