"""A short soak (bench/soak.py): mixed issuing and admin traffic across processes and tenants
keeps every guarantee and each process's memory flat."""

from pathlib import Path

import pytest

from bench.soak import soak

pytestmark = pytest.mark.xdist_group("processes")

SECONDS = 12.0


async def test_a_short_soak_keeps_every_guarantee_and_memory_flat(
    database_url: str, tmp_path: Path
) -> None:
    report = await soak(database_url, tmp_path, seconds=SECONDS)
    assert report.violations == [], "\n".join(report.lines())
    assert report.keys and report.admin_requests
    # Enough samples per process for the thirds to mean something.
    assert all(len(samples) >= 9 for samples in report.rss.values()), report.rss
