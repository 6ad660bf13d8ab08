"""GET /metrics: Prometheus metrics of requests, issued numbers, cached blocks and the pool."""

import asyncio
import secrets
import time
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from app.settings import Settings
from harness.processes import ServiceProcess, start_service
from harness.tenants import Tenant, create_series
from tests.support.api import METRICS_TOKEN, assert_problem

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

COUNTER = """
SELECT c.last_value FROM counters c JOIN series s ON s.id = c.series_id
WHERE s.tenant_id = $1 AND s.name = $2
"""


ISSUED = "docnum_numbers_issued_total"
AUTHORISED = {"Authorization": f"Bearer {METRICS_TOKEN}"}


async def scrape(client: httpx.AsyncClient, headers: dict[str, str] = AUTHORISED) -> Samples:
    """Every sample, read as Prometheus would, with the metrics token unless ``headers`` say
    otherwise; never with an API key."""
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_requests_are_counted_by_route_template_and_status(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "routed", mode="sequence")
    missing_series = f"absent-{secrets.token_hex(4)}"
    unrouted = f"/unrouted-{secrets.token_hex(4)}"
    before = await scrape(client)
    for _ in range(3):
        assert (await client.post("/series/routed/next", headers=tenant.issuer)).status_code == 201
    missing = await client.post(f"/series/{missing_series}/next", headers=tenant.issuer)
    assert missing.status_code == 404
    assert (await client.get(unrouted)).status_code == 404
    after = await scrape(client)

    route = {"method": "POST", "route": "/series/{name}/next"}
    assert delta(before, after, "docnum_http_requests_total", **route, status="201") == 3
    assert delta(before, after, "docnum_http_requests_total", **route, status="404") == 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert delta(before, after, "docnum_http_requests_total", **unmatched) == 1
    assert delta(before, after, "docnum_http_request_duration_seconds_count", **route) == 4
    assert (
        delta(before, after, "docnum_http_request_duration_seconds_bucket", **route, le="+Inf") == 4
    )
    labels = {dict(key)["route"] for _, key in after if "route" in dict(key)}
    assert not any(missing_series in label or unrouted in label for label in labels), labels


@pytest.mark.parametrize("mode", ["gapless", "sequence", "cached"])
async def test_issued_numbers_are_counted_by_series_and_mode_without_replays(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "counted", mode=mode)
    for _ in range(2):
        assert (await client.post("/series/counted/next", headers=tenant.issuer)).status_code == 201
    batch = await client.post("/series/counted/batch", json={"count": 5}, headers=tenant.issuer)
    assert batch.status_code == 201, batch.text
    keyed = {**tenant.issuer, "Idempotency-Key": "once"}
    first = await client.post("/series/counted/next", headers=keyed)
    replay = await client.post("/series/counted/next", headers=keyed)
    assert first.status_code == replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"

    samples = await scrape(client)
    labels = {"tenant": str(tenant.id), "series": "counted", "mode": mode}
    assert value(samples, "docnum_numbers_issued_total", **labels) == 2 + 5 + 1


async def test_without_the_metrics_token_no_tenant_or_series_is_shown(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    series = f"private-{secrets.token_hex(4)}"
    await create_series(client, other_tenant, series, mode="cached", block_size=10)
    before = await scrape(client, headers={})
    for _ in range(3):
        issued = await client.post(f"/series/{series}/next", headers=other_tenant.issuer)
        assert issued.status_code == 201, issued.text
    public = await client.get("/metrics")
    after = await scrape(client, headers={})

    assert series not in public.text
    assert f'tenant="{other_tenant.id}"' not in public.text
    for _, labels in after:
        assert not {"tenant", "series"} & dict(labels).keys(), labels
    # The sums still count every number and block: they are the same counters, summed.
    assert delta(before, after, "docnum_numbers_issued_total", mode="cached") == 3
    assert delta(before, after, "docnum_block_refills_total") >= 1
    labels = {"tenant": str(other_tenant.id), "series": series, "mode": "cached"}
    assert value(await scrape(client), "docnum_numbers_issued_total", **labels) == 3
    # Another tenant's key, a wrong token: refused, not a way around the sums.
    for headers in (tenant.admin, other_tenant.issuer, {"Authorization": "Bearer wrong"}):
        refused = await client.get("/metrics", headers=headers)
        assert_problem(refused, 401, "unauthorized")
        assert series not in refused.text


async def test_cached_block_refills_are_counted(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "blocks", mode="cached", block_size=10)
    labels = {"tenant": str(tenant.id), "series": "blocks"}
    assert (await client.post("/series/blocks/next", headers=tenant.issuer)).status_code == 201
    assert value(await scrape(client), "docnum_block_refills_total", **labels) == 1
    assert await pool.fetchval(COUNTER, tenant.id, "blocks") == 10

    # A fifth of the block used: the next block is reserved in the background.
    assert (await client.post("/series/blocks/next", headers=tenant.issuer)).status_code == 201
    deadline = time.monotonic() + 10
    while (refills := value(await scrape(client), "docnum_block_refills_total", **labels)) < 2:
        assert time.monotonic() < deadline, "the next block was not reserved within 10 s"
        await asyncio.sleep(0.02)
    assert refills == 2
    # The next block: at least block_size values, more for a counter used this fast.
    assert await pool.fetchval(COUNTER, tenant.id, "blocks") >= 20


async def test_pool_gauges_are_read_when_scraped(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    async with pool.acquire(), pool.acquire():
        held = await scrape(client)
    released = await scrape(client)

    def connections(samples: Samples, state: str) -> float:
        return value(samples, "docnum_db_pool_connections", state=state)

    assert connections(held, "in_use") >= 2
    assert connections(released, "in_use") < connections(held, "in_use")
    assert value(held, "docnum_db_pool_max_connections") == settings.pool_max_size
    for samples in (held, released):
        total = connections(samples, "in_use") + connections(samples, "idle")
        assert 1 <= total <= settings.pool_max_size


async def test_openmetrics_is_served_when_asked_for(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert "docnum_db_pool_connections" in response.text


def test_a_weak_metrics_token_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(metrics_token="metrics")
    [error] = refused.value.errors(include_input=False)
    assert error["msg"].startswith("DOCNUM_METRICS_TOKEN is too weak: it has 7 characters")


def serving_workers(service: ServiceProcess) -> set[int]:
    """The workers of ``service`` that hold an open connection from a client."""
    return {
        worker.pid
        for worker in psutil.Process(service.process.pid).children()
        for connection in worker.net_connections("tcp")
        if connection.status == psutil.CONN_ESTABLISHED and connection.laddr.port == service.port
    }


@pytest.mark.xdist_group("processes")
async def test_with_two_workers_every_scrape_shows_the_requests_of_both(
    database_url: str, service_dir: Path, tenant: Tenant
) -> None:
    env: dict[str, str | None] = {
        "DOCNUM_METRICS_TOKEN": METRICS_TOKEN,
        "DOCNUM_LOG_LEVEL": "warning",
    }
    service = start_service(database_url, service_dir, workers=2, env=env)
    series = f"spread-{secrets.token_hex(4)}"
    clients: list[httpx.AsyncClient] = []
    try:
        async with httpx.AsyncClient(base_url=service.url) as admin:
            await create_series(admin, tenant, series, mode="gapless")
        # A connection stays with the worker that accepted it: open new ones, each issuing a
        # number, until both workers have served some.
        deadline = time.monotonic() + 20
        while len(serving_workers(service)) < 2:
            assert time.monotonic() < deadline, "the requests never reached a second worker"
            clients.append(httpx.AsyncClient(base_url=service.url))
            issued = await clients[-1].post(f"/series/{series}/next", headers=tenant.issuer)
            assert issued.status_code == 201, issued.text
        labels = {"tenant": str(tenant.id), "series": series, "mode": "gapless"}
        for _ in range(6):  # each on a new connection, answered by either worker
            async with httpx.AsyncClient(base_url=service.url) as scraper:
                assert value(await scrape(scraper), ISSUED, **labels) == len(clients)
                summed = await scrape(scraper, headers={})
                assert value(summed, ISSUED, mode="gapless") == len(clients)
    finally:
        for client in clients:
            await client.aclose()
        service.stop()


async def test_reserved_numbers_are_counted_as_issued_once_when_confirmed(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "held")
    kept = await client.post("/series/held/reservations", json={"count": 2}, headers=tenant.issuer)
    let_go = await client.post("/series/held/reservations", headers=tenant.issuer)
    labels = {"tenant": str(tenant.id), "series": "held", "mode": "gapless"}
    assert value(await scrape(client), ISSUED, **labels) == 0
    for _ in range(2):
        confirmed = await client.post(
            f"/series/held/reservations/{kept.json()['id']}/confirm", headers=tenant.issuer
        )
        assert confirmed.status_code == 200, confirmed.text
    released = await client.delete(
        f"/series/held/reservations/{let_go.json()['id']}", headers=tenant.issuer
    )
    assert released.status_code == 200, released.text
    assert value(await scrape(client), ISSUED, **labels) == 2
