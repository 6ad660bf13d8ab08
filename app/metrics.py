"""Prometheus metrics of one process.

Counters and histograms live in this process's memory: with ``DOCNUM_WORKERS`` above 1, a scrape
reaches whichever worker accepts the connection and shows that worker's numbers only. For exact
metrics run one worker per container and scale with replicas, scraping each replica.

Pool gauges are read from the pool at scrape time, so they are never stale.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.definition import Series

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "docnum_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "docnum_http_request_duration_seconds",
    "Time from receiving a request to finishing its response, by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
ISSUED = Counter(
    "docnum_numbers_issued",
    "Numbers issued (idempotent replays excluded), by tenant id, series and mode.",
    ["tenant", "series", "mode"],
)
BLOCK_REFILLS = Counter(
    "docnum_block_refills",
    "Blocks of values reserved from the database by cached series, by tenant id and series.",
    ["tenant", "series"],
)


# The labelled children of each (method, route, status): looking them up again for every request
# would cost more than the counting itself. Routes are templates, so this stays small.
_request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    children = _request_children.get((method, route, status))
    if children is None:
        children = _request_children[(method, route, status)] = (
            REQUESTS.labels(method, route, str(status)),
            LATENCY.labels(method, route),
        )
    children[0].inc()
    children[1].observe(seconds)


# The labelled child of each (tenant, series, mode), for the same reason: one per series.
_issued_children: dict[tuple[int, str, str], Counter] = {}


def count_issued(series: "Series", count: int) -> None:
    labels = (series.tenant_id, series.name, series.mode)
    child = _issued_children.get(labels)
    if child is None:
        child = _issued_children[labels] = ISSUED.labels(str(labels[0]), labels[1], labels[2])
    child.inc(count)


def count_block_refill(series: "Series") -> None:
    BLOCK_REFILLS.labels(str(series.tenant_id), series.name).inc()


class PoolCollector(Collector):
    """Connections of the database pool, in use and idle, as they are when scraped."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        idle = self._pool.get_idle_size()
        connections = GaugeMetricFamily(
            "docnum_db_pool_connections",
            "Open connections of the database pool, by state.",
            labels=["state"],
        )
        connections.add_metric(["in_use"], self._pool.get_size() - idle)
        connections.add_metric(["idle"], idle)
        yield connections
        yield GaugeMetricFamily(
            "docnum_db_pool_max_connections",
            "The most connections the database pool opens.",
            value=self._pool.get_max_size(),
        )


class _Scrape(Collector):
    """This process's registered metrics plus the pool of the app being scraped."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool_collector = PoolCollector(pool)

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from self._pool_collector.collect()


def render(pool: asyncpg.Pool, accept: str) -> tuple[bytes, str]:
    """The exposition body and its content type, in the format ``accept`` asks for."""
    encode, content_type = choose_encoder(accept)
    return encode(_Scrape(pool)), content_type
