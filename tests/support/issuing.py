"""Issuing as the routes do, on every path a request may take to the database."""

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import asyncpg
import httpx

from app.definition import Series
from app.issuing.engine import Answer, Issuer
from harness.tenants import Tenant
from tests.support.api import assert_problem


async def rewrite_format(pool: asyncpg.Pool, tenant: Tenant, name: str, source: str) -> None:
    """Replace a series' format behind the service's back, history included, as a series changed
    before the service kept formats or checked them would have been; processes are told."""
    async with pool.acquire() as conn, conn.transaction():
        series_id = await conn.fetchval(
            "UPDATE series SET format = $3, version = version + 1"
            " WHERE tenant_id = $1 AND name = $2 RETURNING id",
            tenant.id,
            name,
            source,
        )
        await conn.execute(
            "UPDATE series_formats SET format = $2 WHERE series_id = $1", series_id, source
        )
        await conn.execute("SELECT pg_notify('docnum_series', $1)", f"{tenant.id}:{name}")


# One series per way a request reaches the database: the gapless queue, coalesced sequence
# values, a cached block reservation, and a transaction of its own (an Idempotency-Key).
ISSUING_PATHS: dict[str, dict[str, object]] = {
    "gapless": {"mode": "gapless"},
    "sequence": {"mode": "sequence"},
    "cached": {"mode": "cached", "block_size": 1},
    "keyed": {"mode": "sequence", "ledger": True},
}


async def issue_by_path(
    client: httpx.AsyncClient, tenant: Tenant, name: str, key: str
) -> httpx.Response:
    """``next`` on one of :data:`ISSUING_PATHS`; only ``keyed`` sends the Idempotency-Key."""
    headers = {**tenant.issuer, **({"Idempotency-Key": key} if name == "keyed" else {})}
    return await client.post(f"/series/{name}/next", headers=headers)


async def issues_again(client: httpx.AsyncClient, tenant: Tenant, within: float) -> None:
    """The app is ready and issues on every path within ``within`` s, answering 503 meanwhile."""
    deadline = time.monotonic() + within
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "not ready again"
        await asyncio.sleep(0.05)
    for name in ISSUING_PATHS:
        while (response := await issue_by_path(client, tenant, name, "again")).status_code != 201:
            assert_problem(response, 503, "unavailable")
            assert time.monotonic() < deadline, f"{name} does not issue again"
            await asyncio.sleep(0.05)


def issue_plain(
    issuer: Issuer,
    series: Series,
    count: int = 1,
    variables: dict[str, str] | None = None,
) -> Coroutine[Any, Any, Answer]:
    """Issue as the routes do, without an Idempotency-Key."""
    return issuer.issue(
        series,
        count=count,
        date=None,
        variables=variables or {},
        claim=None,
        respond=lambda issued: b"",
    )
