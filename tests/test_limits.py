"""Per-process limits: requests in progress (``max_concurrent_requests``) and database connections
(``pool_max_size``, waited for at most ``pool_timeout_ms``). Past either limit a request is
answered 503 with ``Retry-After`` at once instead of queueing without bound, and the process
serves normally again as soon as load falls back under the limit."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx

from app.main import create_app
from app.settings import Settings
from tests.support import (
    Target,
    Tenant,
    assert_problem,
    create_series,
    lock_counters,
    lock_waiters,
)


@contextlib.asynccontextmanager
async def served(settings: Settings, **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app of its own, with its own pool, built from the test settings changed."""
    app = create_app(settings.model_copy(update=changes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://docnum.test") as http:
            yield http


async def issue(http: httpx.AsyncClient, tenant: Tenant, series: str) -> httpx.Response:
    return await http.post(f"/series/{series}/next", headers=tenant.issuer)


async def test_requests_past_the_concurrency_limit_are_refused_with_503(
    settings: Settings, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    async with served(settings, max_concurrent_requests=2, lock_timeout_ms=10_000) as http:
        await create_series(http, tenant, "g", mode="gapless")
        assert (await issue(http, tenant, "g")).status_code == 201
        async with pool.acquire() as conn, conn.transaction():
            await lock_counters(conn, Target(tenant, "g"))
            held = [asyncio.create_task(issue(http, tenant, "g")) for _ in range(2)]
            await lock_waiters(conn, at_least=1)
            refused = await http.get("/healthz")
            assert_problem(refused, 503, "overloaded")
            assert refused.headers["Retry-After"].isdigit()
            assert_problem(await issue(http, tenant, "g"), 503, "overloaded")
        assert sorted([(await task).json()["value"] for task in held]) == [2, 3]
        assert (await http.get("/healthz")).status_code == 200
        assert (await issue(http, tenant, "g")).json()["value"] == 4


async def test_a_request_that_finds_no_free_connection_in_time_gets_503(
    settings: Settings, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    limits = {"pool_min_size": 1, "pool_max_size": 1, "pool_timeout_ms": 200}
    async with served(settings, **limits, lock_timeout_ms=10_000, auth_cache_seconds=60) as http:
        await create_series(http, tenant, "g", mode="gapless")
        await create_series(http, tenant, "s", mode="sequence")
        assert (await issue(http, tenant, "g")).status_code == 201
        assert (await issue(http, tenant, "s")).status_code == 201
        async with pool.acquire() as conn, conn.transaction():
            await lock_counters(conn, Target(tenant, "g"))
            held = asyncio.create_task(issue(http, tenant, "g"))
            await lock_waiters(conn, at_least=1)  # the only connection waits for the lock
            refused = await issue(http, tenant, "s")
            body = assert_problem(refused, 503, "unavailable")
            assert "connection" in body["detail"]
            assert refused.headers["Retry-After"].isdigit()
        assert (await held).json()["value"] == 2
        assert (await issue(http, tenant, "s")).json()["value"] == 2
