"""Locks held behind the service's back, and pools that record what they send."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from harness.load import Target

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
