"""Behind PgBouncer in transaction pooling mode, each transaction of the pool runs with the
service's session settings, whichever server connection PgBouncer gives it, and none of them
leaks to the server connections afterwards."""

import asyncio
from collections.abc import Iterator

import pytest

from app.database import create_pool
from app.settings import Settings
from tests.support.pgbouncer import pgbouncer

SHOW_SETTINGS = """
SELECT current_setting('lock_timeout'), current_setting('statement_timeout'),
       current_setting('idle_in_transaction_session_timeout')
"""


@pytest.fixture(scope="module")
def bouncer_url(database_url: str) -> Iterator[str]:
    with pgbouncer(database_url) as url:
        yield url


async def test_every_transaction_behind_pgbouncer_runs_with_the_session_settings(
    bouncer_url: str, database_url: str
) -> None:
    settings = Settings(
        database_url=bouncer_url,
        direct_database_url=database_url,
        transaction_pooling=True,
        statement_cache_size=0,
        lock_timeout_ms=1234,
        statement_timeout_ms=5678,
    )
    pool = await create_pool(bouncer_url, settings)
    try:

        async def one() -> tuple[tuple[str, ...], tuple[str, ...]]:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    inside = tuple(await conn.fetchrow(SHOW_SETTINGS))
                # Outside a transaction: the server's own defaults, nothing left behind.
                outside = tuple(await conn.fetchrow(SHOW_SETTINGS))
            return inside, outside

        seen = await asyncio.gather(*(one() for _ in range(40)))
    finally:
        await pool.close()
    assert {inside for inside, _ in seen} == {("1234ms", "5678ms", "1min")}
    assert all(outside != ("1234ms", "5678ms", "1min") for _, outside in seen)
