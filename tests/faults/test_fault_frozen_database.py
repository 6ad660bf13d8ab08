"""A database that stops answering without closing anything (a vanished host, a partition),
seen through a proxy that stops forwarding: every request gets a 503 with Retry-After within
``pool_timeout_ms + database_timeout_ms``, ``/readyz`` says 503, and the service issues again by
itself once the database answers. A request cut off after its COMMIT was sent answers 503, never
a number, and its retry with the same Idempotency-Key gets the committed number."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.database import acquire_for_snapshot, create_pool
from app.settings import Settings
from harness.load import Target, ledger_values
from harness.tenants import Tenant, create_series
from tests.conftest import app_client
from tests.support.api import assert_problem
from tests.support.issuing import ISSUING_PATHS, issue_by_path, issues_again
from tests.support.proxies import StallingProxy

POOL_TIMEOUT_MS = 500
DATABASE_TIMEOUT_MS = 1000
# The documented bound, and a second for the test's own scheduling.
ANSWER_WITHIN = (POOL_TIMEOUT_MS + DATABASE_TIMEOUT_MS) / 1000 + 1
RECOVERY_SECONDS = 10.0
POOL_SIZE = 4


@pytest.fixture
async def proxied(
    empty_database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Tenant, StallingProxy]]:
    """An app whose database is reached through a proxy the test controls."""
    async with StallingProxy(empty_database_url).running() as proxy:
        settings = Settings(
            database_url=proxy.url,
            data_dir=tmp_path,
            demo=False,
            pool_timeout_ms=POOL_TIMEOUT_MS,
            database_timeout_ms=DATABASE_TIMEOUT_MS,
            lock_timeout_ms=DATABASE_TIMEOUT_MS // 2,
            connect_timeout_ms=POOL_TIMEOUT_MS,
            auth_cache_seconds=60,
            # Every connection is open before the database freezes, so requests meet frozen
            # connections rather than connection attempts that time out.
            pool_min_size=POOL_SIZE,
            pool_max_size=POOL_SIZE,
        )
        async with app_client(settings) as (client, tenant):
            yield client, tenant, proxy


async def issue(client: httpx.AsyncClient, tenant: Tenant, name: str, key: str) -> httpx.Response:
    async with asyncio.timeout(ANSWER_WITHIN):
        return await issue_by_path(client, tenant, name, key)


async def test_a_frozen_database_answers_503_within_the_deadline_and_recovers_by_itself(
    proxied: tuple[httpx.AsyncClient, Tenant, StallingProxy],
) -> None:
    client, tenant, proxy = proxied
    for name, fields in ISSUING_PATHS.items():
        await create_series(client, tenant, name, **fields)
        if name != "cached":  # a cached series would then serve its spare block from memory
            assert (await issue(client, tenant, name, "before")).status_code == 201

    proxy.freeze()
    for name in ISSUING_PATHS:
        # Several at once, so some wait in the queue in front of the database.
        frozen = await asyncio.gather(
            *(issue(client, tenant, name, f"frozen-{n}") for n in range(3))
        )
        for response in frozen:
            assert_problem(response, 503, "unavailable")
            assert response.headers["Retry-After"].isdigit()
    async with asyncio.timeout(ANSWER_WITHIN):
        assert_problem(await client.get("/readyz"), 503, "unavailable")
    async with asyncio.timeout(ANSWER_WITHIN):
        assert_problem(await client.get("/series", headers=tenant.issuer), 503, "unavailable")

    proxy.thaw()
    await issues_again(client, tenant, within=RECOVERY_SECONDS)


async def test_a_gapless_number_whose_commit_answer_is_lost_is_answered_503_then_replayed(
    proxied: tuple[httpx.AsyncClient, Tenant, StallingProxy],
) -> None:
    client, tenant, proxy = proxied
    await create_series(client, tenant, "cut", mode="gapless")
    headers = {**tenant.issuer, "Idempotency-Key": "cut-off"}
    proxy.stall_answers_after(b"COMMIT")
    async with asyncio.timeout(ANSWER_WITHIN):
        response = await client.post("/series/cut/next", headers=headers)
    assert proxy.stalled.is_set()
    assert_problem(response, 503, "unavailable")

    # The commit went through: the number is in the ledger, and the retry gets it.
    retry = await client.post("/series/cut/next", headers=headers)
    assert retry.status_code == 201, retry.text
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json()["value"] == 1
    url = str(client.base_url)
    assert await ledger_values(client, url, Target(tenant, "cut")) == [("all", 1)]


async def test_reading_a_whole_period_in_one_snapshot_has_a_deadline_of_its_own(
    database_url: str,
) -> None:
    """A verification or an auditor's ZIP may hold its connection past database_timeout_ms (a
    large period takes seconds to read), up to snapshot_timeout_ms."""
    settings = Settings(
        database_url=database_url, database_timeout_ms=200, snapshot_timeout_ms=5000
    )
    pool = await create_pool(database_url, settings)
    try:
        async with acquire_for_snapshot(pool) as conn:
            await conn.execute("SELECT pg_sleep(0.5)")
            assert await conn.fetchval("SELECT 1") == 1
        with pytest.raises(asyncpg.ConnectionDoesNotExistError):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT pg_sleep(0.5)")
    finally:
        await pool.close()
