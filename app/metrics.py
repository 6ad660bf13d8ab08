"""Prometheus metrics of the service: of one process, or of all workers of ``docnum serve``.

With one worker, counters and histograms live in the process's memory. With ``DOCNUM_WORKERS``
above 1, ``docnum serve`` runs prometheus_client's multiprocess mode: it gives the workers one
directory (``PROMETHEUS_MULTIPROC_DIR``, emptied at start) where each keeps its counts in files
of its own, and a scrape, whichever worker answers it, adds up every worker's files, those of
workers that exited included. So every scrape shows the totals of the service since it started.
A worker that exits says so (``mark_process_dead``), which drops what only a live process means.

Pool gauges are read from the pool at scrape time, so they are never stale; they are those of
the worker that answered the scrape (each worker has its own pool).

A scrape sees each tenant's series only when it is authorised (it presents the metrics token, see
``app.routes.metrics``). Any other scrape gets every family with a ``tenant`` or ``series`` label
summed over those labels: totals by mode, never a tenant id, a series name or one tenant's count.
The sums are made from the same counters when scraped, so the two views always agree.
"""

import os
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.definition import Series

# Set for the workers by ``docnum serve`` when it runs more than one (prometheus_client reads it
# once, when first imported, to decide where values live).
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

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
RUNNING_LOW = Counter(
    "docnum_counters_running_low",
    "Counters that came to have fewer values left than their series' warn_remaining, by tenant "
    "id and series.",
    ["tenant", "series"],
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


def count_running_low(series: "Series") -> None:
    RUNNING_LOW.labels(str(series.tenant_id), series.name).inc()


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


# Labels that name a tenant or one of its series.
TENANT_LABELS = frozenset({"tenant", "series"})


def without_tenants(family: Metric) -> Metric:
    """The family summed over its tenant and series labels (unchanged when it has none).

    The ``_created`` samples of the summed children are left out: a sum has no single creation
    time, and the exposition formats make them optional.
    """
    if all(TENANT_LABELS.isdisjoint(sample.labels) for sample in family.samples):
        return family
    sums: defaultdict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
    for sample in family.samples:
        if sample.name.endswith("_created"):
            continue
        labels = tuple((k, v) for k, v in sample.labels.items() if k not in TENANT_LABELS)
        sums[sample.name, labels] += sample.value
    summed = Metric(
        family.name,
        f"{family.documentation} Summed over tenants and series (the metrics token shows each).",
        family.type,
        family.unit,
    )
    for (name, labels), value in sums.items():
        summed.add_sample(name, dict(labels), value)
    return summed


class _Scrape(Collector):
    """This process's registered metrics plus the pool of the app being scraped; summed over
    tenants and series unless ``per_series``."""

    def __init__(self, pool: asyncpg.Pool, per_series: bool) -> None:
        self._pool_collector = PoolCollector(pool)
        self._per_series = per_series

    def collect(self) -> Iterator[Metric]:
        for family in _registry().collect():
            yield family if self._per_series else without_tenants(family)
        yield from self._pool_collector.collect()


def _registry() -> CollectorRegistry:
    """Where a scrape reads the counters: every worker's files in multiprocess mode, else this
    process's registry."""
    if MULTIPROCESS_DIR is None:
        return REGISTRY
    workers = CollectorRegistry()
    multiprocess.MultiProcessCollector(workers, MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    return workers


def worker_exited() -> None:
    """Tell the other workers this one is gone (multiprocess mode only)."""
    if MULTIPROCESS_DIR is not None:
        multiprocess.mark_process_dead(os.getpid(), MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]


def render(pool: asyncpg.Pool, accept: str, *, per_series: bool) -> tuple[bytes, str]:
    """The exposition body and its content type, in the format ``accept`` asks for; each tenant's
    series only when ``per_series`` (the scrape is authorised)."""
    encode, content_type = choose_encoder(accept)
    return encode(_Scrape(pool, per_series)), content_type
