"""POST /series/{name}/batch: 1 <= count <= max_batch, numbers ascending; gapless and cached
reserve one contiguous run in one statement, a sequence gives unique values that may interleave."""

import asyncio

import asyncpg
import httpx
import pytest

from app import series as series_sql
from app.issuing.counters import ADVANCE_COUNTER
from app.issuing.engine import Issuer
from app.ledger import INSERT_CHAINED_NUMBERS
from app.settings import Settings
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem
from tests.support.database import recording_pool
from tests.support.issuing import issue_plain

MODES = ["gapless", "sequence", "cached"]


@pytest.mark.parametrize("count", [0, -1])
async def test_count_must_be_at_least_one(
    client: httpx.AsyncClient, tenant: Tenant, count: int
) -> None:
    await create_series(client, tenant, "b")
    response = await client.post("/series/b/batch", json={"count": count}, headers=tenant.issuer)
    body = assert_problem(response, 422, "invalid-request")
    assert [e["field"] for e in body["errors"]] == ["count"]


@pytest.mark.parametrize("body", [{}, {"count": "many"}, {"count": 2.5}, {"count": None}])
async def test_count_must_be_an_integer(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, object]
) -> None:
    await create_series(client, tenant, "b")
    response = await client.post("/series/b/batch", json=body, headers=tenant.issuer)
    assert_problem(response, 422, "invalid-request")


async def test_count_above_max_batch_is_refused_and_costs_nothing(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    await create_series(client, tenant, "b")
    response = await client.post(
        "/series/b/batch", json={"count": settings.max_batch + 1}, headers=tenant.issuer
    )
    body = assert_problem(response, 422, "invalid-request")
    assert body["errors"] == [
        {"field": "count", "message": f"must be at most {settings.max_batch}"}
    ]
    response = await client.post("/series/b/next", headers=tenant.issuer)
    assert response.json()["value"] == 1


async def test_a_full_batch_is_one_contiguous_run_in_the_ledger(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    await create_series(client, tenant, "b", start=5, step=3, format="B-{seq:06}")
    count = settings.max_batch
    response = await client.post("/series/b/batch", json={"count": count}, headers=tenant.issuer)
    assert response.status_code == 201, response.text
    body = response.json()
    expected = [5 + 3 * i for i in range(count)]
    assert body["count"] == count
    assert body["values"] == expected
    assert body["numbers"] == [f"B-{v:06d}" for v in expected]
    gaps = (await client.get("/series/b/gaps", headers=tenant.issuer)).json()
    assert gaps == {
        "period": "all",
        "variables": {},
        "start": 5,
        "last_value": expected[-1],
        "missing": 0,
        "runs": 0,
        "truncated": False,
        "gaps": [],
    }


@pytest.mark.parametrize("mode", MODES)
async def test_a_batch_carries_its_date_and_variables(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(
        client, tenant, "b", mode=mode, reset="monthly", format="{YYYY}{MM}-{var:site}-{seq:03}"
    )
    body = {"count": 3, "date": "2026-02-28", "variables": {"site": "north"}}
    response = await client.post("/series/b/batch", json=body, headers=tenant.issuer)
    assert response.status_code == 201, response.text
    assert response.json() | {"issued_at": None} == {
        "series": "b",
        "period": "2026-02",
        "date": "2026-02-28",
        "issued_at": None,
        "count": 3,
        "numbers": ["202602-north-001", "202602-north-002", "202602-north-003"],
        "values": [1, 2, 3],
    }


@pytest.mark.parametrize("mode", ["gapless", "cached"])
async def test_concurrent_batches_are_each_one_contiguous_run(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "b", mode=mode, start=5, step=3, block_size=16)

    async def batch(count: int) -> list[int]:
        response = await client.post(
            "/series/b/batch", json={"count": count}, headers=tenant.issuer
        )
        assert response.status_code == 201, response.text
        values: list[int] = response.json()["values"]
        return values

    runs = await asyncio.gather(*(batch(1 + i % 40) for i in range(60)))
    for run in runs:
        assert run == list(range(run[0], run[0] + 3 * len(run), 3))
    values = sorted(v for run in runs for v in run)
    assert len(set(values)) == len(values)
    if mode == "gapless":
        assert values == [5 + 3 * i for i in range(len(values))]


# What asyncpg's pool sends when a connection goes back to it.
POOL_RESET = "SELECT pg_advisory_unlock_all()"


@pytest.mark.parametrize("count", [1, 2, 5_000])
async def test_a_gapless_batch_costs_the_same_statements_whatever_its_size(
    client: httpx.AsyncClient,
    tenant: Tenant,
    pool: asyncpg.Pool,
    database_url: str,
    count: int,
) -> None:
    """What is proven: asyncpg's query logger on a real one-connection pool records every
    statement the issuing code sends. Once the connection knows the column types, a batch of any
    size is one transaction of the same four statements: BEGIN, one counter update that reserves
    the whole run, one ledger insert (which also chains the numbers' events), COMMIT."""
    await create_series(client, tenant, "b", start=5, step=3)
    series = await series_sql.fetch(pool, tenant.id, "b")
    async with recording_pool(database_url, max_size=1) as (own_pool, sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        await issue_plain(issuer, series)  # asyncpg reads the types once
        sent.clear()
        answer = await issue_plain(issuer, series, count=count)
    assert [q for q in sent if not q.startswith(POOL_RESET)] == [
        "BEGIN;",
        ADVANCE_COUNTER,
        INSERT_CHAINED_NUMBERS,
        "COMMIT;",
    ]
    assert answer.issued is not None
    assert answer.issued.values == [8 + 3 * i for i in range(count)]


async def test_a_cached_batch_beyond_the_block_is_one_statement(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    """The recorded statements show one counter update for a batch far larger than a block."""
    await create_series(client, tenant, "b", mode="cached", block_size=10, start=5, step=3)
    series = await series_sql.fetch(pool, tenant.id, "b")
    async with recording_pool(database_url, max_size=1) as (own_pool, sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        answer = await issue_plain(issuer, series, count=5_000)
        await issuer.close()
    assert [q for q in sent if not q.startswith(POOL_RESET)] == [ADVANCE_COUNTER]
    assert answer.issued is not None
    assert answer.issued.values == [5 + 3 * i for i in range(5_000)]
