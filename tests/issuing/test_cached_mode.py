"""Cached mode: blocks reserved from the counter row, served from memory, prefetched at a fifth,
unique across processes, and given back on a clean shutdown when still on top of the counter."""

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest

from app import series as series_sql
from app.definition import CounterKey, Series
from app.issuing.blocks import GROWTH_LIMIT, BlockIssuer
from app.issuing.counters import CounterLimits
from harness.processes import start_service
from harness.tenants import Tenant, create_series

PERIOD = CounterKey("all", "")
COUNTER_TOP = """
SELECT last_value FROM counters WHERE series_id = $1 AND period = $2 AND variables = $3
"""


async def cached_series(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, **fields: object
) -> Series:
    body = {"mode": "cached", "start": 5, "step": 3, "block_size": 10, **fields}
    await create_series(client, tenant, "c", **body)
    return await series_sql.fetch(pool, tenant.id, "c")


async def counter_top(
    pool: asyncpg.Pool, series: Series, period: CounterKey = PERIOD
) -> int | None:
    top: int | None = await pool.fetchval(COUNTER_TOP, series.id, *period)
    return top


async def settled_top(pool: asyncpg.Pool, series: Series, expected: int) -> int | None:
    """The counter's top once it reads ``expected`` (a background reservation), or after 5 s."""
    for _ in range(250):
        top = await counter_top(pool, series)
        if top == expected:
            break
        await asyncio.sleep(0.02)
    return top


def grid(series: Series, first_index: int, count: int) -> list[int]:
    """The values at positions first_index .. first_index + count - 1 of the series."""
    return [series.start + (first_index + i) * series.step for i in range(count)]


async def test_a_block_is_reserved_once_and_the_next_one_at_a_fifth_used(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    series = await cached_series(client, tenant, pool)
    blocks = BlockIssuer(pool, idempotency_ttl_seconds=60)
    try:
        assert await blocks.take(series, PERIOD, 1) == grid(series, 0, 1)
        assert await counter_top(pool, series) == grid(series, 9, 1)[0]  # one block of ten
        await asyncio.sleep(0.2)
        assert await counter_top(pool, series) == grid(series, 9, 1)[0]  # 10% used: no prefetch

        assert await blocks.take(series, PERIOD, 1) == grid(series, 1, 1)  # 20% used
        second_block_top = grid(series, 19, 1)[0]
        assert await settled_top(pool, series, second_block_top) == second_block_top

        # The rest of the first block, then the prefetched one, all without a new reservation.
        rest = [v for _ in range(8) for v in await blocks.take(series, PERIOD, 1)]
        assert rest == grid(series, 2, 8)
        assert await blocks.take(series, PERIOD, 1) == grid(series, 10, 1)
    finally:
        await blocks.close()


async def test_a_batch_that_does_not_fit_gets_its_own_contiguous_run(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    series = await cached_series(client, tenant, pool)
    blocks = BlockIssuer(pool, idempotency_ttl_seconds=60)
    try:
        assert await blocks.take(series, PERIOD, 1) == grid(series, 0, 1)  # reserves a block
        assert await blocks.take(series, PERIOD, 2) == grid(series, 1, 2)  # fits in it
        batch = await blocks.take(series, PERIOD, 25)
        assert batch == list(range(batch[0], batch[0] + 25 * series.step, series.step))
        assert batch[0] >= grid(series, 10, 1)[0]  # above the first block
        # The first block keeps serving where it stopped.
        assert await blocks.take(series, PERIOD, 1) == grid(series, 3, 1)
    finally:
        await blocks.close()


async def test_a_busy_counter_reserves_a_larger_next_block_up_to_its_limit(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """Two values of a block of ten in well under two seconds, with blocks meant to last 1,000
    seconds: the next block is as large as it may be, GROWTH_LIMIT blocks of ten."""
    series = await cached_series(client, tenant, pool)
    blocks = BlockIssuer(pool, 60, CounterLimits(block_seconds=1000))
    try:
        assert await blocks.take(series, PERIOD, 1) == grid(series, 0, 1)
        assert await blocks.take(series, PERIOD, 1) == grid(series, 1, 1)  # 20% used
        grown_top = grid(series, 10 + 10 * GROWTH_LIMIT - 1, 1)[0]
        assert await settled_top(pool, series, grown_top) == grown_top
        served = [
            v for _ in range(8 + 10 * GROWTH_LIMIT) for v in await blocks.take(series, PERIOD, 1)
        ]
        assert served == grid(series, 2, 8 + 10 * GROWTH_LIMIT)
    finally:
        await blocks.close()


async def test_a_quiet_counter_keeps_blocks_of_its_block_size(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """Two values in 0.2 s or more, with blocks meant to last a millisecond: the next block is
    never smaller than block_size."""
    series = await cached_series(client, tenant, pool)
    blocks = BlockIssuer(pool, 60, CounterLimits(block_seconds=0.001))
    try:
        assert await blocks.take(series, PERIOD, 1) == grid(series, 0, 1)
        await asyncio.sleep(0.2)
        assert await blocks.take(series, PERIOD, 1) == grid(series, 1, 1)  # 20% used
        second_block_top = grid(series, 19, 1)[0]
        assert await settled_top(pool, series, second_block_top) == second_block_top
    finally:
        await blocks.close()


@pytest.mark.parametrize("block_seconds", [0, 1000], ids=["fixed blocks", "growing blocks"])
async def test_issuers_sharing_a_counter_never_share_a_value(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, block_seconds: float
) -> None:
    """Three issuers stand in for three processes: each has its own blocks in memory."""
    series = await cached_series(client, tenant, pool, block_size=7)
    limits = CounterLimits(block_seconds=block_seconds)
    issuers = [BlockIssuer(pool, 60, limits) for _ in range(3)]
    try:

        async def take(index: int) -> list[int]:
            return await issuers[index % 3].take(series, PERIOD, 1 + index % 4)

        runs = await asyncio.gather(*(take(i) for i in range(300)))
    finally:
        for issuer in issuers:
            await issuer.close()
    values = [v for run in runs for v in run]
    assert len(values) == len(set(values)) == sum(1 + i % 4 for i in range(300))
    assert all((v - series.start) % series.step == 0 and v >= series.start for v in values)
    for run in runs:
        assert run == list(range(run[0], run[0] + len(run) * series.step, series.step))


async def test_close_gives_back_the_unused_tail_when_still_on_top(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    series = await cached_series(client, tenant, pool)
    blocks = BlockIssuer(pool, idempotency_ttl_seconds=60)
    assert await blocks.take(series, PERIOD, 1) == grid(series, 0, 1)
    await blocks.close()
    assert await counter_top(pool, series) == grid(series, 0, 1)[0]

    again = BlockIssuer(pool, idempotency_ttl_seconds=60)
    try:
        assert await again.take(series, PERIOD, 1) == grid(series, 1, 1)  # no hole
    finally:
        await again.close()


async def test_close_keeps_the_tail_when_another_reserved_after_it(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    series = await cached_series(client, tenant, pool)
    first, second = (
        BlockIssuer(pool, idempotency_ttl_seconds=60),
        BlockIssuer(pool, idempotency_ttl_seconds=60),
    )
    assert await first.take(series, PERIOD, 1) == grid(series, 0, 1)
    assert await second.take(series, PERIOD, 1) == grid(series, 10, 1)
    await first.close()  # its tail lies below the second's block: giving it back would repeat
    assert await counter_top(pool, series) == grid(series, 19, 1)[0]
    await second.close()
    assert await counter_top(pool, series) == grid(series, 10, 1)[0]


async def test_a_caller_that_goes_away_does_not_cancel_the_block_others_wait_for(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    series = await cached_series(client, tenant, pool)
    blocks = BlockIssuer(pool, idempotency_ttl_seconds=60)
    try:
        gone = asyncio.create_task(blocks.take(series, PERIOD, 1))
        staying = asyncio.create_task(blocks.take(series, PERIOD, 1))
        await asyncio.sleep(0)  # both now wait for the same reservation
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert await staying == grid(series, 0, 1)
        assert await counter_top(pool, series) == grid(series, 9, 1)[0]  # one block, not two
    finally:
        await blocks.close()


@pytest.mark.parametrize("idempotent", [False, True])
async def test_callers_holding_every_connection_still_get_numbers(
    client: httpx.AsyncClient, tenant: Tenant, idempotent: bool
) -> None:
    """With a ledger (or an Idempotency-Key) a request holds a connection while it takes values.

    With one-value blocks every request needs a reservation; far more requests than pooled
    connections must not each wait for a block that needs a connection of its own.
    """
    await create_series(client, tenant, "c", mode="cached", block_size=1, ledger=True)

    async def one(index: int) -> int:
        headers = {**tenant.issuer, **({"Idempotency-Key": f"k{index}"} if idempotent else {})}
        response = await client.post("/series/c/next", headers=headers)
        assert response.status_code == 201, response.text
        value: int = response.json()["value"]
        return value

    values = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(80))), 30)
    assert len(set(values)) == 80
    response = await client.get("/series/c/numbers?limit=1000", headers=tenant.admin)
    assert sorted(item["value"] for item in response.json()["items"]) == sorted(values)


async def test_a_clean_shutdown_gives_the_tail_back(
    database_url: str, service_dir: Path, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """A real process stopped with SIGTERM returns what it reserved but did not hand out."""
    await create_series(client, tenant, "c", mode="cached", block_size=50)
    service = start_service(database_url, service_dir)
    try:
        async with httpx.AsyncClient(base_url=service.url, headers=tenant.issuer) as http:
            values = [(await http.post("/series/c/next")).json()["value"] for _ in range(3)]
    finally:
        service.stop()
    assert service.process.returncode == 0
    assert values == [1, 2, 3]
    response = await client.get("/series/c", headers=tenant.admin)
    assert response.json()["counters"] == [{"period": "all", "variables": {}, "last_value": 3}]
    # Another process (this one) carries on where it stopped.
    response = await client.post("/series/c/next", headers=tenant.issuer)
    assert response.json()["value"] == 4
