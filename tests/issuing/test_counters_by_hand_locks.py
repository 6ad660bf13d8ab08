"""A counter moved by hand holds what issuing waits for: a request that arrives between reading
the counter's top and moving it gets a value above the new top, never one below it."""

import asyncio

import asyncpg
import httpx
import pytest

from app import series as series_sql
from app.definition import CounterKey
from app.issuing import manual
from harness.tenants import Tenant, create_series

# Requests waiting on a lock, as pg_stat_activity shows them.
WAITING_ON_A_LOCK = """
SELECT count(*) FROM pg_stat_activity
WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'
"""


async def until_waiting_or_done(
    watcher: asyncpg.Connection, racing: "asyncio.Task[httpx.Response]", waits_on: str
) -> None:
    """Until the racing request waits on a lock (or, if nothing holds it back, has finished)."""
    for _ in range(10_000):
        if racing.done() or await watcher.fetchval(WAITING_ON_A_LOCK, waits_on):
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("mode", "waits_on"), [("gapless", "counters"), ("sequence", "nextval"), ("cached", "counters")]
)
async def test_a_request_racing_a_counter_move_waits_and_gets_a_value_above_it(
    client: httpx.AsyncClient, pool: asyncpg.Pool, tenant: Tenant, mode: str, waits_on: str
) -> None:
    await create_series(client, tenant, "lock", mode=mode, format="L-{seq}", ledger=True)
    first = await client.post("/series/lock/next", json={}, headers=tenant.issuer)
    assert first.status_code == 201, first.text
    series = await series_sql.fetch(pool, tenant.id, "lock")
    key = CounterKey("all", "")
    async with pool.acquire() as conn, conn.transaction():
        locked = await manual._lock(conn, series, key, 100)
        racing = asyncio.create_task(
            client.post("/series/lock/batch", json={"count": 200}, headers=tenant.issuer)
        )
        async with pool.acquire() as watcher:
            await until_waiting_or_done(watcher, racing, waits_on)
        await manual._set_top(conn, series, locked, locked.top + 1000)
    answer = await racing
    assert answer.status_code == 201, answer.text
    assert min(answer.json()["values"]) > locked.top + 1000
