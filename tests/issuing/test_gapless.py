"""Gapless mode: group commit coalesces concurrent requests into one transaction, in order of
arrival; a failed transaction fails every request in it and hands out nothing; a failure that
belongs to one request (render, collision, exhaustion) fails that request alone."""

import asyncio

import asyncpg
import httpx
import pytest

from app import series as series_sql
from app.definition import Series
from app.issuing.counters import ADVANCE_COUNTER
from app.issuing.engine import Answer, Issuer
from app.issuing.gapless import MAX_VALUES_PER_TRANSACTION
from app.issuing.issued import Issued
from app.ledger import INSERT_CHAINED_NUMBERS
from app.problems import InvalidRequest, NumberCollision, SeriesExhausted
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem
from tests.support.database import recording_pool
from tests.support.issuing import issue_plain, rewrite_format

LOCK_COUNTER = "SELECT 1 FROM counters WHERE series_id = $1 FOR UPDATE"


async def gapless_series(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, **fields: object
) -> Series:
    await create_series(client, tenant, "g", **{"start": 5, "step": 3, **fields})
    return await series_sql.fetch(pool, tenant.id, "g")


def issued(answer: Answer) -> Issued:
    assert answer.issued is not None
    return answer.issued


async def ledger(client: httpx.AsyncClient, tenant: Tenant) -> list[tuple[int, str, str]]:
    response = await client.get("/series/g/numbers?limit=1000", headers=tenant.admin)
    assert response.status_code == 200, response.text
    return [(e["value"], e["number"], e["status"]) for e in response.json()["items"]]


async def test_concurrent_requests_share_one_transaction_in_order_of_arrival(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    series = await gapless_series(client, tenant, pool)
    async with recording_pool(database_url) as (own_pool, sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        requests = [issue_plain(issuer, series) for _ in range(50)]
        answers = await asyncio.gather(*requests)
        values = [issued(a).values[0] for a in answers]
        assert values == [5 + 3 * i for i in range(50)]  # the i-th to arrive gets the i-th value
        assert sent.count(ADVANCE_COUNTER) == 1
        assert sent.count(INSERT_CHAINED_NUMBERS) == 1
        assert sent.count("BEGIN;") == sent.count("COMMIT;") == 1

        more = await asyncio.gather(*(issue_plain(issuer, series) for _ in range(7)))
        assert [issued(a).values[0] for a in more] == [5 + 3 * i for i in range(50, 57)]
        assert sent.count(ADVANCE_COUNTER) == 2
    entries = await ledger(client, tenant)
    assert [(v, n) for v, n, _ in entries] == [(5 + 3 * i, f"T-{5 + 3 * i}") for i in range(57)]


async def test_a_group_holds_at_most_its_bound_of_values_and_a_larger_request_goes_alone(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    """Batches of 4,000 arriving together: two per transaction (8,000 fit, 12,000 do not); one of
    12,000 is a transaction of its own. Values still follow the order of arrival."""
    series = await gapless_series(client, tenant, pool)
    assert 8_000 <= MAX_VALUES_PER_TRANSACTION < 12_000
    async with recording_pool(database_url) as (own_pool, sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        counts = [4_000] * 5 + [12_000, 4_000]
        answers = await asyncio.gather(*(issue_plain(issuer, series, c) for c in counts))
        firsts = [issued(a).values[0] for a in answers]
        assert firsts == [5 + 3 * sum(counts[:i]) for i in range(len(counts))]
        # [4k 4k] [4k 4k] [4k] [12k] [4k]: the fifth does not fit with the 12,000 after it.
        assert sent.count(INSERT_CHAINED_NUMBERS) == 5
        assert sent.count("BEGIN;") == sent.count("COMMIT;") == 5


async def test_a_failed_transaction_fails_every_request_and_hands_out_nothing(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """The counter row is locked past lock_timeout: every waiter gets a 503, none a number."""
    series = await gapless_series(client, tenant, pool)
    first = await client.post("/series/g/next", headers=tenant.issuer)
    assert first.json()["value"] == 5

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_COUNTER, series.id)
        waiting = await asyncio.gather(
            *(client.post("/series/g/next", headers=tenant.issuer) for _ in range(12))
        )
    for response in waiting:
        assert_problem(response, 503, "unavailable")
        assert response.headers["Retry-After"]

    after = await client.post("/series/g/next", headers=tenant.issuer)
    assert after.json()["value"] == 8  # nothing was skipped
    assert [v for v, _, _ in await ledger(client, tenant)] == [5, 8]
    gaps = (await client.get("/series/g/gaps", headers=tenant.issuer)).json()
    assert gaps["gaps"] == [] and gaps["last_value"] == 8


async def test_a_number_that_cannot_be_rendered_fails_alone(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    series = await gapless_series(client, tenant, pool, format="x" * 33 + "{var:a}-{seq}")
    too_long = {"a": "a" * 32}  # 33 + 32 + 1 + the digits: over 64 characters
    async with recording_pool(database_url) as (own_pool, _sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        variables = [{"a": "ok"}, too_long, {"a": "ok"}, too_long, {"a": "ok"}]
        requests = [issue_plain(issuer, series, variables=v) for v in variables]
        outcomes = await asyncio.gather(*requests, return_exceptions=True)
    assert isinstance(outcomes[1], InvalidRequest)
    assert isinstance(outcomes[3], InvalidRequest)
    good = [o for o in outcomes if isinstance(o, Answer)]
    assert [issued(a).values for a in good] == [[5], [8], [11]]
    assert [v for v, _, _ in await ledger(client, tenant)] == [5, 8, 11]


async def test_a_number_that_collides_fails_alone_and_the_rest_stay_gapless(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    """The ledger's unique number is the backstop when a rendering repeats an issued number.

    Templates that could do so are refused at creation now; this series' format is written
    straight into the table, as one created before that rule would be. Its one counter is shared
    by every variable value, so the colliding request is the only one that renders alike.
    """
    await gapless_series(
        client, tenant, pool, start=1, step=1, format="{var:a}/{seq}-{var:b}", shared_counter=True
    )
    await rewrite_format(pool, tenant, "g", "{var:a}-{seq}-{var:b}")
    series = await series_sql.fetch(pool, tenant.id, "g")
    async with recording_pool(database_url) as (own_pool, _sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        first = await issue_plain(issuer, series, variables={"a": "x", "b": "2-y"})
        assert issued(first).numbers == ["x-1-2-y"]
        group = [{"a": "x-1", "b": "y"}, {"a": "p", "b": "q"}, {"a": "p", "b": "q"}]
        outcomes = await asyncio.gather(
            *(issue_plain(issuer, series, variables=v) for v in group),
            return_exceptions=True,
        )
    assert isinstance(outcomes[0], NumberCollision)  # it would have read "x-1-2-y" with 2
    assert [issued(a).numbers for a in outcomes[1:]] == [["p-2-q"], ["p-3-q"]]  # type: ignore[arg-type]
    assert await ledger(client, tenant) == [
        (1, "x-1-2-y", "issued"),
        (2, "p-2-q", "issued"),
        (3, "p-3-q", "issued"),
    ]

    # Over HTTP the same collision is a 409 problem, and costs the series no value.
    async def post(a: str, b: str) -> httpx.Response:
        body = {"variables": {"a": a, "b": b}}
        return await client.post("/series/g/next", json=body, headers=tenant.issuer)

    assert (await post("z", "5-w")).json()["number"] == "z-4-5-w"
    assert_problem(await post("z-4", "w"), 409, "number-collision")  # 5 would read the same
    assert (await post("ok", "ok")).json() | {"issued_at": None, "date": None} == {
        "series": "g",
        "number": "ok-5-ok",
        "value": 5,
        "period": "all",
        "date": None,
        "issued_at": None,
    }


async def test_a_batch_that_does_not_fit_fails_alone(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    series = await gapless_series(client, tenant, pool, max_value=20)  # 5, 8, ..., 20: six
    async with recording_pool(database_url) as (own_pool, _sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        head = await issue_plain(issuer, series, count=4)
        assert issued(head).values == [5, 8, 11, 14]
        counts = [3, 1, 1, 1]  # two values are left
        outcomes = await asyncio.gather(
            *(issue_plain(issuer, series, count=c) for c in counts),
            return_exceptions=True,
        )
    assert isinstance(outcomes[0], SeriesExhausted)
    assert [issued(a).values for a in outcomes[1:3]] == [[17], [20]]  # type: ignore[arg-type]
    assert isinstance(outcomes[3], SeriesExhausted)
    assert [v for v, _, _ in await ledger(client, tenant)] == [5, 8, 11, 14, 17, 20]


async def test_a_request_cancelled_while_queued_costs_no_number(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    series = await gapless_series(client, tenant, pool)
    assert (await client.post("/series/g/next", headers=tenant.issuer)).json()["value"] == 5
    async with recording_pool(database_url) as (own_pool, _sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        async with pool.acquire() as conn:
            locked = conn.transaction()
            await locked.start()
            await conn.execute(LOCK_COUNTER, series.id)
            first = asyncio.create_task(issue_plain(issuer, series))
            await asyncio.sleep(0.1)  # its transaction now waits for the lock
            gone = asyncio.create_task(issue_plain(issuer, series))
            staying = asyncio.create_task(issue_plain(issuer, series))
            await asyncio.sleep(0.05)  # both are queued behind it
            gone.cancel()
            await locked.rollback()
        assert issued(await first).values == [8]
        assert issued(await staying).values == [11]
        with pytest.raises(asyncio.CancelledError):
            await gone
    assert [v for v, _, _ in await ledger(client, tenant)] == [5, 8, 11]
