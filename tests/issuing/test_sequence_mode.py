"""Sequence mode: one PostgreSQL sequence per (series, period), created once however many race to
create it; values are unique, batches may interleave, and a failed request loses its value."""

import asyncio

import asyncpg
import httpx

from app import series as series_sql
from app.definition import CounterKey
from app.issuing.engine import Issuer
from app.issuing.sequences import SequenceIssuer, sequence_name
from app.problems import SeriesExhausted
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem
from tests.support.database import recording_pool
from tests.support.issuing import issue_plain

SEQUENCES_OF = """
SELECT c.period, to_regclass('docnum_seq_' || c.id) IS NOT NULL AS exists
FROM counters AS c WHERE c.series_id = $1 ORDER BY c.period
"""


async def test_racing_first_requests_create_the_sequence_once(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "s", mode="sequence", reset="yearly", format="{YYYY}-{seq}")

    async def one() -> int:
        body = {"date": "2031-05-01"}
        response = await client.post("/series/s/next", json=body, headers=tenant.issuer)
        assert response.status_code == 201, response.text
        value: int = response.json()["value"]
        return value

    values = await asyncio.gather(*(one() for _ in range(40)))
    assert sorted(values) == list(range(1, 41))
    series = await series_sql.fetch(pool, tenant.id, "s")
    rows = await pool.fetch(SEQUENCES_OF, series.id)
    assert [(r["period"], r["exists"]) for r in rows] == [("2031", True)]


async def test_issuers_of_separate_processes_race_to_create_it(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """Each issuer stands for a process: its own name cache, its own connection."""
    await create_series(client, tenant, "s", mode="sequence", start=100, step=7)
    series = await series_sql.fetch(pool, tenant.id, "s")

    async def process(count: int) -> list[int]:
        async with pool.acquire() as conn:
            return await SequenceIssuer(pool, idempotency_ttl_seconds=60).take(
                conn, series, CounterKey("all", ""), count
            )

    runs = await asyncio.gather(*(process(1 + i % 3) for i in range(8)))
    values = sorted(v for run in runs for v in run)
    assert values == [100 + 7 * i for i in range(sum(1 + i % 3 for i in range(8)))]
    assert all(run == sorted(run) for run in runs)
    counter_id = await pool.fetchval("SELECT id FROM counters WHERE series_id = $1", series.id)
    assert sequence_name(counter_id) == f"docnum_seq_{counter_id}"


async def test_concurrent_batches_are_unique_and_ascending(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "s", mode="sequence", start=3, step=2)

    async def batch(count: int) -> list[int]:
        response = await client.post(
            "/series/s/batch", json={"count": count}, headers=tenant.issuer
        )
        assert response.status_code == 201, response.text
        values: list[int] = response.json()["values"]
        assert response.json()["numbers"] == [f"T-{v}" for v in values]
        return values

    runs = await asyncio.gather(*(batch(5 + i) for i in range(20)))
    values = [v for run in runs for v in run]
    assert all(run == sorted(run) for run in runs)
    assert sorted(values) == [3 + 2 * i for i in range(len(values))]


async def test_a_request_that_fails_after_taking_its_value_loses_it(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Sequences never roll back: the next request gets the value after the lost one (one
    counter for every variable value here, so the lost value is the next request's counter's)."""
    await create_series(
        client,
        tenant,
        "s",
        mode="sequence",
        shared_counter=True,
        format="x" * 33 + "{var:a}-{seq}",
    )

    async def post(a: str) -> httpx.Response:
        body = {"variables": {"a": a}}
        return await client.post("/series/s/next", json=body, headers=tenant.issuer)

    assert (await post("ok")).json()["value"] == 1
    assert_problem(await post("a" * 32), 422, "invalid-request")  # the number is too long
    assert (await post("ok")).json()["value"] == 3


async def test_concurrent_requests_share_nextval_round_trips(
    tenant: Tenant, client: httpx.AsyncClient, pool: asyncpg.Pool, database_url: str
) -> None:
    """Requests that arrive while a nextval is in flight are served by the next one, together:
    fewer statements than requests, every value unique, each request's run ascending."""
    await create_series(client, tenant, "s", mode="sequence", step=3)
    series = await series_sql.fetch(pool, tenant.id, "s")
    async with recording_pool(database_url, max_size=2) as (own_pool, sent):
        issuer = Issuer(own_pool, idempotency_ttl_seconds=60)
        counts = [1 + i % 4 for i in range(120)]
        answers = await asyncio.gather(*(issue_plain(issuer, series, count) for count in counts))
    runs = [answer.issued.values for answer in answers if answer.issued is not None]
    assert [len(run) for run in runs] == counts
    assert all(run == sorted(run) for run in runs)
    values = sorted(v for run in runs for v in run)
    assert values == [1 + 3 * i for i in range(sum(counts))]
    nextvals = [query for query in sent if "nextval" in query]
    assert 1 <= len(nextvals) < len(counts) // 2


async def test_a_group_that_does_not_fit_is_served_request_by_request(
    tenant: Tenant, client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """A batch too large for what is left fails alone; the single requests beside it still get
    the remaining values."""
    await create_series(client, tenant, "s", mode="sequence", max_value=4)
    series = await series_sql.fetch(pool, tenant.id, "s")
    issuer = Issuer(pool, idempotency_ttl_seconds=60)
    requests = [issue_plain(issuer, series, 1) for _ in range(3)]
    requests.insert(1, issue_plain(issuer, series, 4))
    answers = await asyncio.gather(*requests, return_exceptions=True)
    served = [a.issued.values for a in answers if not isinstance(a, BaseException) and a.issued]
    refused = [a for a in answers if isinstance(a, BaseException)]
    assert sorted(v for run in served for v in run) == [1, 2, 3]
    assert len(refused) == 1
    assert isinstance(refused[0], SeriesExhausted)
