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
import pytest
from pydantic import ValidationError

from app.main import create_app
from app.settings import Settings
from harness.load import Target
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem
from tests.support.database import lock_counters, lock_waiters


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


@contextlib.asynccontextmanager
async def two_held(
    http: httpx.AsyncClient, pool: asyncpg.Pool, tenant: Tenant
) -> AsyncIterator[list[asyncio.Task[httpx.Response]]]:
    """Two requests of ``tenant`` for a number of its gapless series ``g``, held in progress
    behind its locked counter (after one issued, so the counter exists) until the block ends."""
    assert (await issue(http, tenant, "g")).status_code == 201
    async with pool.acquire() as conn, conn.transaction():
        await lock_counters(conn, Target(tenant, "g"))
        held = [asyncio.create_task(issue(http, tenant, "g")) for _ in range(2)]
        await lock_waiters(conn, at_least=1)
        yield held


async def test_requests_past_the_concurrency_limit_are_refused_with_503(
    settings: Settings, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    async with served(settings, max_concurrent_requests=2, lock_timeout_ms=10_000) as http:
        await create_series(http, tenant, "g", mode="gapless")
        async with two_held(http, pool, tenant) as held:
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


def rate_limit(response: httpx.Response) -> tuple[str, int, int]:
    """The policy, remaining requests ``r`` and seconds ``t`` of an answer's ``RateLimit``."""
    name, *parameters = response.headers["RateLimit"].split(";")
    values = dict(parameter.split("=") for parameter in parameters)
    return name, int(values["r"]), int(values["t"])


async def test_a_key_past_its_rate_limit_gets_429_with_retry_after_on_both_paths(
    settings: Settings, tenant: Tenant
) -> None:
    async with served(settings, key_rate_limit="3/minute") as http:
        await create_series(http, tenant, "g", mode="gapless")  # the admin key's request
        for remaining in (2, 1, 0):
            issued = await issue(http, tenant, "g")
            assert issued.status_code == 201, issued.text
            assert issued.headers["RateLimit-Policy"] == '"key";q=3;w=60'
            assert rate_limit(issued)[:2] == ('"key"', remaining)
        # The lean path and a FastAPI route both count against, and refuse, the same key.
        for refused in (
            await issue(http, tenant, "g"),
            await http.get("/series/g", headers=tenant.issuer),
        ):
            assert_problem(refused, 429, "rate-limited")
            name, remaining, seconds = rate_limit(refused)
            assert (name, remaining) == ('"key"', 0)
            assert 1 <= seconds <= 60
            assert refused.headers["Retry-After"] == str(seconds)
            assert refused.headers["RateLimit-Policy"] == '"key";q=3;w=60'
        # Another key of the tenant has a quota of its own.
        listed = await http.get("/series", headers=tenant.admin)
        assert listed.status_code == 200
        assert rate_limit(listed)[:2] == ('"key"', 1)
        assert (await issue(http, tenant, "g")).status_code == 429


async def test_a_tenant_limit_counts_every_key_of_the_tenant_and_no_other_tenant(
    settings: Settings, tenant: Tenant, other_tenant: Tenant
) -> None:
    changes = {"key_rate_limit": "10/minute", "tenant_rate_limit": "4/minute"}
    async with served(settings, **changes) as http:
        await create_series(http, tenant, "g", mode="gapless")
        await create_series(http, other_tenant, "g", mode="gapless")
        assert (await issue(http, tenant, "g")).status_code == 201
        listed = await http.get("/series", headers=tenant.issuer)
        assert listed.headers["RateLimit-Policy"] == '"key";q=10;w=60, "tenant";q=4;w=60'
        # The policy with the fewest requests left is the one reported.
        assert rate_limit(listed)[:2] == ('"tenant"', 1)
        assert (await http.get("/series/g", headers=tenant.admin)).status_code == 200
        for refused in (
            await issue(http, tenant, "g"),
            await http.get("/keys", headers=tenant.admin),
        ):
            assert_problem(refused, 429, "rate-limited")
            assert rate_limit(refused)[:2] == ('"tenant"', 0)
        assert (await issue(http, other_tenant, "g")).status_code == 201


def test_a_rate_limit_that_is_not_a_rate_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="600/minute"):
        Settings(key_rate_limit="lots")


async def test_a_tenant_past_its_concurrency_cap_gets_429_while_others_are_served(
    settings: Settings, tenant: Tenant, other_tenant: Tenant, pool: asyncpg.Pool
) -> None:
    changes = {"max_concurrent_requests_per_tenant": 2, "lock_timeout_ms": 10_000}
    async with served(settings, **changes) as http:
        await create_series(http, tenant, "g", mode="gapless")
        await create_series(http, other_tenant, "g", mode="gapless")
        async with two_held(http, pool, tenant) as held:
            for refused in (
                await issue(http, tenant, "g"),
                await http.get("/series", headers=tenant.admin),
            ):
                assert_problem(refused, 429, "rate-limited")
                assert refused.headers["Retry-After"] == "1"
                assert rate_limit(refused)[:2] == ('"concurrency"', 0)
            assert (await issue(http, other_tenant, "g")).status_code == 201
        assert sorted([(await task).json()["value"] for task in held]) == [2, 3]
        # The places are given back once answered, refusals' included.
        assert (await issue(http, tenant, "g")).json()["value"] == 4
        assert (await http.get("/series", headers=tenant.admin)).status_code == 200
