"""The pool hands connections back without a round trip, and still never hands on a transaction
that a request left open."""

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.database import BoundedPool, create_pool
from app.settings import Settings


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[BoundedPool]:
    settings = Settings(database_url=database_url, pool_min_size=1, pool_max_size=1)
    pool = await create_pool(database_url, settings)
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_connection_goes_back_to_the_pool_without_a_round_trip(
    one_connection: BoundedPool,
) -> None:
    sent: list[str] = []

    def record(query: asyncpg.connection.LoggedQuery) -> None:
        sent.append(query.query)

    async with one_connection.acquire() as conn:
        conn.add_query_logger(record)
        await conn.fetchval("SELECT 1")
        server = conn.get_server_pid()
    async with one_connection.acquire() as again:
        assert again.get_server_pid() == server, "the pool has one connection"
        again.remove_query_logger(record)
    assert sent == ["SELECT 1"]


async def test_a_transaction_left_open_is_rolled_back_before_the_connection_is_reused(
    one_connection: BoundedPool,
) -> None:
    table = f"left_open_{secrets.token_hex(4)}"
    async with one_connection.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute(f"CREATE TABLE {table} (id int)")
    async with one_connection.acquire() as again:
        assert not again.is_in_transaction()
        assert await again.fetchval("SELECT to_regclass($1)", table) is None
