"""Short soaks (bench/soak.py): mixed issuing and admin traffic across processes and tenants keeps
every guarantee and each process's memory flat, and so does a new counter per request."""

from pathlib import Path

import pytest

from bench.soak import soak, soak_distinct

pytestmark = pytest.mark.xdist_group("processes")

SECONDS = 12.0
# Enough new counters past the caches' size that a process keeping ~1 kB per counter grows by
# several times MAX_FLAT_GROWTH.
DISTINCT_COUNTERS = 1_500
CACHED_COUNTERS = 150


async def test_a_short_soak_keeps_every_guarantee_and_memory_flat(
    database_url: str, tmp_path: Path
) -> None:
    report = await soak(database_url, tmp_path, seconds=SECONDS)
    assert report.violations == [], "\n".join(report.lines())
    assert report.keys and report.admin_requests
    # Enough samples per process for the thirds to mean something.
    assert all(len(samples) >= 9 for samples in report.rss.values()), report.rss


async def test_a_new_counter_per_request_keeps_memory_flat_once_the_caches_are_full(
    database_url: str, tmp_path: Path
) -> None:
    """Cached and sequence mode, one process keeping state for a few hundred counters."""
    report = await soak_distinct(
        database_url, tmp_path, counters=DISTINCT_COUNTERS, cached_counters=CACHED_COUNTERS
    )
    assert report.violations == [], "\n".join(report.lines())
    assert len(report.flat_samples()) >= 8, report.samples
