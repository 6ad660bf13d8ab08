"""A gapless counter locked for long by another transaction: issuing fails fast with a clear 503
once ``lock_timeout_ms`` has passed, holds at most one database connection per process while it
waits, blocks no other series, and goes on without a gap once the lock is released."""

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest

from harness.load import Load, Target, guarantee_violations
from harness.processes import SMALL_POOL, services
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem
from tests.support.database import LOCK_WAITERS, lock_counters, lock_waiters

pytestmark = pytest.mark.xdist_group("processes")

BLOCKED_REQUESTS = 20


async def test_a_held_counter_lock_answers_503_and_issuing_resumes_without_a_gap(
    client: httpx.AsyncClient,
    tenant: Tenant,
    pool: asyncpg.Pool,
    database_url: str,
    service_dir: Path,
) -> None:
    await create_series(client, tenant, "locked", mode="gapless")
    await create_series(client, tenant, "free", mode="gapless")
    locked, free = Target(tenant, "locked"), Target(tenant, "free")
    env = {**SMALL_POOL, "DOCNUM_LOCK_TIMEOUT_MS": "300"}
    with services(database_url, service_dir, 1, env=env) as (service,):
        load = Load([service.url], [locked])
        keys = [f"blocked-{i}" for i in range(BLOCKED_REQUESTS)]
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            assert await load.issue(http, 0, locked, "before", "next", {}) is not None

            async def issue(target: Target, key: str) -> httpx.Response:
                headers = {**tenant.issuer, "Idempotency-Key": key}
                return await http.post(f"/series/{target.series}/next", headers=headers)

            async with pool.acquire() as conn, conn.transaction():
                await lock_counters(conn, locked)
                blocked = [asyncio.create_task(issue(locked, key)) for key in keys]
                most_waiting = await lock_waiters(conn, at_least=1, mine=False)
                while not all(task.done() for task in blocked):
                    most_waiting = max(most_waiting, await conn.fetchval(LOCK_WAITERS))
                    await asyncio.sleep(0.01)
                # Every blocked request was answered while the lock was still held, and a
                # series whose counter is not locked was served meanwhile.
                unblocked = await issue(free, "unblocked")
                assert unblocked.status_code == 201, unblocked.text

            for task in blocked:
                response = task.result()
                body = assert_problem(response, 503, "unavailable")
                assert "locked" in body["detail"]
                assert response.headers["Retry-After"].isdigit()
            # The queued requests shared one waiting connection instead of one each.
            assert most_waiting == 1, f"{most_waiting} connections waited for the lock at once"

            for index, key in enumerate(keys):
                assert await load.issue(http, index, locked, key, "next", {}) is not None
            assert load.unexpected == []
            answered = list(load.answered.values())
            assert sorted(v for a in answered for v in a.values) == list(
                range(1, BLOCKED_REQUESTS + 2)
            )
            assert await guarantee_violations(http, service.url, locked, answered) == []
