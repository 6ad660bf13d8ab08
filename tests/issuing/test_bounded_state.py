"""Bounded state: a series has a limited number of counters, and what a process keeps in memory
per counter, per series and per key is bounded, however many distinct periods, variable values,
series and keys its clients send. A cached-mode block dropped from memory gives its unused values
back, as a clean stop does."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from app import series as series_sql
from app.auth import FIND_KEY, Authenticator
from app.catalog import SeriesCatalog
from app.definition import CounterKey, Series
from app.issuing.blocks import BlockIssuer
from app.issuing.counters import CounterLimits
from app.issuing.sequences import FIND_COUNTER, SequenceIssuer
from app.main import create_app
from app.migrate import load_migrations, migrate
from app.problems import Unauthorized
from app.settings import Settings
from harness.load import eventually
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem
from tests.support.database import recording_pool

LIMIT = 2
# Well formed, so each is refused for being unknown rather than for its shape.
WRONG_KEYS = ("dn_00000000_" + "A" * 43, "dn_00000000_" + "B" * 43)
TOP_OF = "SELECT last_value FROM counters WHERE series_id = $1 AND period = $2 AND variables = $3"
COUNTED_FROM = "0003"  # the migration that keeps series.counter_count
NEW_SERIES = """
INSERT INTO series (tenant_id, name, format, mode, reset, start, step, timezone, ledger)
VALUES ($1, 's', 'S-{seq}', 'gapless', 'daily', 1, 1, 'UTC', false) RETURNING id
"""
NEW_COUNTERS = """
INSERT INTO counters (series_id, period, variables, last_value)
SELECT $1, gen_random_uuid()::text, '', 1 FROM generate_series(1, $2)
"""
COUNTER_COUNT = "SELECT counter_count FROM series WHERE id = $1"


@pytest.fixture(scope="module")
async def limited(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The service with room for LIMIT counters per series."""
    application = create_app(settings.model_copy(update={"max_counters_per_series": LIMIT}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://docnum.test") as client:
            yield client


@pytest.mark.parametrize(
    ("mode", "fields", "new_counter"),
    [
        ("gapless", {}, "variables"),
        ("gapless", {"reset": "daily", "format": "{YYYY}{MM}{DD}-{seq}"}, "date"),
        ("cached", {}, "variables"),
        ("cached", {"ledger": True}, "variables"),
        ("sequence", {}, "variables"),
    ],
)
async def test_a_number_that_needs_a_counter_past_the_series_limit_gets_409_in_every_mode(
    limited: httpx.AsyncClient,
    tenant: Tenant,
    mode: str,
    fields: dict[str, object],
    new_counter: str,
) -> None:
    await create_series(limited, tenant, "s", mode=mode, **{"format": "{var:b}-{seq}", **fields})

    async def issue(which: int) -> httpx.Response:
        if new_counter == "date":
            body: dict[str, object] = {"date": f"2030-01-0{which}"}
        else:
            body = {"variables": {"b": f"v{which}"}}
        return await limited.post("/series/s/next", json=body, headers=tenant.issuer)

    for which in range(1, LIMIT + 1):
        assert (await issue(which)).status_code == 201
    refused = assert_problem(await issue(LIMIT + 1), 409, "too-many-counters")
    assert f"{LIMIT} counters" in refused["detail"]
    again = await issue(1)  # an existing counter carries on
    assert again.status_code == 201, again.text
    assert again.json()["value"] == 2
    found = (await limited.get("/series/s", headers=tenant.admin)).json()["counters"]
    assert len(found) == LIMIT


async def test_a_series_keeps_count_of_its_counters_from_before_the_count_was_kept(
    empty_database_url: str,
) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        shipped = load_migrations()
        await migrate(conn, [m for m in shipped if m.name < COUNTED_FROM])
        tenant = await conn.fetchval("INSERT INTO tenants (name) VALUES ('t') RETURNING id")
        series = await conn.fetchval(NEW_SERIES, tenant)
        await conn.execute(NEW_COUNTERS, series, 3)
        await migrate(conn, shipped)
        assert await conn.fetchval(COUNTER_COUNT, series) == 3
        await conn.execute(NEW_COUNTERS, series, 2)
        assert await conn.fetchval(COUNTER_COUNT, series) == 5
    finally:
        await conn.close()


async def test_the_issuing_routes_declare_the_too_many_counters_problem(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/series/{name}/next", "/series/{name}/batch"):
        assert (
            "/problems/too-many-counters" in paths[path]["post"]["responses"]["409"]["description"]
        )


async def _top(pool: asyncpg.Pool, series: Series, key: CounterKey) -> int | None:
    top: int | None = await pool.fetchval(TOP_OF, series.id, *key)
    return top


async def _settled(
    pool: asyncpg.Pool, series: Series, key: CounterKey, expected: int
) -> int | None:
    """The counter's top once it reads ``expected`` (given back in the background), or at 10 s."""
    for _ in range(500):
        top = await _top(pool, series, key)
        if top == expected:
            break
        await asyncio.sleep(0.02)
    return top


async def test_a_cached_lane_dropped_from_memory_gives_its_unused_values_back_and_no_value_twice(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """One lane in memory: each counter taken from drops the other's lane, while a request is
    still waiting for the dropped lane's block."""
    await create_series(client, tenant, "c", mode="cached", block_size=10)
    series = await series_sql.fetch(pool, tenant.id, "c")
    a, b, c = (CounterKey("all", f"b={name}") for name in "abc")
    blocks = BlockIssuer(pool, idempotency_ttl_seconds=60, limits=CounterLimits(in_memory=1))
    try:
        waiting = asyncio.ensure_future(blocks.take(series, a, 1))
        await asyncio.sleep(0)  # it now waits for a's first block
        [from_b] = await blocks.take(series, b, 1)  # drops a's lane
        [from_a] = await waiting  # reserved alone: its lane's block is being given back
        await blocks.take(series, c, 1)  # drops b's lane
        # What each dropped lane did not hand out is back: each counter ends at its last value.
        assert await _settled(pool, series, a, from_a) == from_a
        assert await _settled(pool, series, b, from_b) == from_b
    finally:
        await blocks.close()
    again = BlockIssuer(pool, idempotency_ttl_seconds=60)
    try:
        assert await again.take(series, a, 1) == [from_a + 1]  # no value twice, none skipped
    finally:
        await again.close()


async def test_a_process_keeps_the_sequence_names_of_a_bounded_number_of_counters(
    client: httpx.AsyncClient, tenant: Tenant, database_url: str
) -> None:
    await create_series(client, tenant, "s", mode="sequence")
    async with recording_pool(database_url) as (pool, sent):
        issuer = SequenceIssuer(pool, idempotency_ttl_seconds=60, limits=CounterLimits(in_memory=1))
        series = await series_sql.fetch(pool, tenant.id, "s")
        a, b = CounterKey("all", "b=a"), CounterKey("all", "b=b")
        async with pool.acquire() as conn:
            for key in (a, a, b, b):  # a name is remembered once its counter is found committed
                await issuer.take(conn, series, key, 1)
            looked_up = sent.count(FIND_COUNTER)
            assert await issuer.take(conn, series, b, 1) == [3]
            assert sent.count(FIND_COUNTER) == looked_up  # b's name is in memory
            assert await issuer.take(conn, series, a, 1) == [3]
            assert sent.count(FIND_COUNTER) == looked_up + 1  # a's was dropped for b's


async def test_the_catalog_keeps_a_bounded_number_of_series(
    client: httpx.AsyncClient, tenant: Tenant, database_url: str
) -> None:
    for name in ("a", "b"):
        await create_series(client, tenant, name)
    async with recording_pool(database_url) as (pool, sent):
        catalog = SeriesCatalog(pool, database_url, size=1)
        await catalog.start()
        try:
            await eventually(lambda: catalog.listening, "the catalog listens for changes")
            for name in ("a", "a", "b", "b"):
                await catalog.get(tenant.id, name)
            assert sent.count(series_sql.SELECT_SERIES) == 2  # each read once, then from memory
            await catalog.get(tenant.id, "a")
            assert sent.count(series_sql.SELECT_SERIES) == 3  # a was dropped for b
        finally:
            await catalog.stop()


async def test_a_wrong_key_is_refused_from_memory_and_the_keys_remembered_are_bounded(
    tenant: Tenant, database_url: str
) -> None:
    async with recording_pool(database_url) as (pool, sent):
        auth = Authenticator(pool, cache_seconds=60, size=1)
        for key in (WRONG_KEYS[0], WRONG_KEYS[0], WRONG_KEYS[1], WRONG_KEYS[1]):
            with pytest.raises(Unauthorized):
                await auth.verify(key)
        assert sent.count(FIND_KEY) == 2  # each wrong key cost one query, then none
        with pytest.raises(Unauthorized):
            await auth.verify(WRONG_KEYS[0])
        assert sent.count(FIND_KEY) == 3  # the first was dropped for the second

        for key in (tenant.issue_key, tenant.issue_key, tenant.admin_key, tenant.issue_key):
            await auth.verify(key)
        assert sent.count(FIND_KEY) == 6  # the issue key was dropped for the admin key
