"""What the ledger's hash chain costs: verifying a period of 100,000 numbers, and chaining a batch.

    python -m bench.chain [--numbers 100000] [--runs 5]

Runs on a database of its own (on ``TEST_DATABASE_URL``'s server, or the embedded PostgreSQL),
dropped at the end. Issues the numbers into one gapless counter through the app (in-process,
batches of 10,000, as ``POST /series/{name}/batch`` does), then prints:

- the time to encode and hash the events of one batch of 10,000 in Python (best of ``runs``);
- the time to verify the period (``GET /series/{name}/verify`` without HTTP: one snapshot, every
  event rehashed, every ledger row checked against its event), best and median of ``runs``.
"""

import argparse
import asyncio
import datetime
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx

from app import auditor, chain, ledger
from app.definition import CounterKey
from app.issuing.issued import Issued
from app.main import create_app
from app.settings import Settings
from harness.database import new_database
from harness.tenants import create_series, make_tenant

BATCH = 10_000


async def timed(runs: int, work: Callable[[], Awaitable[object]]) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        seconds.append(time.perf_counter() - started)
    return seconds


async def measure(url: str, numbers: int, runs: int) -> None:
    application = create_app(Settings(database_url=url, demo=False, log_level="warning"))
    async with application.router.lifespan_context(application):
        services = application.state.services
        tenant = await make_tenant(services.pool)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            await create_series(client, tenant, "bench", format="INV-{YYYY}-{seq:07}")
            for left in range(numbers, 0, -BATCH):
                response = await client.post(
                    "/series/bench/batch",
                    json={"count": min(BATCH, left), "date": "2026-05-01"},
                    headers=tenant.issuer,
                    timeout=60,
                )
                response.raise_for_status()
        series = await services.catalog.get(tenant.id, "bench")
        period = services.issuer.current_period(series)

        now = datetime.datetime.now(datetime.UTC)
        batch = [
            Issued(
                series="bench",
                period="",
                date=datetime.date(2026, 5, 1),
                issued_at=now,
                values=list(range(1, BATCH + 1)),
                numbers=[f"INV-2026-{v:07}" for v in range(1, BATCH + 1)],
            )
        ]
        head = chain.Head(0, 0, chain.GENESIS)

        async def hash_a_batch() -> None:
            chain.link(head, ledger.issued_events(CounterKey("", ""), batch))

        hashing = await timed(runs, hash_a_batch)
        print(f"encoding and hashing a batch of {BATCH:,} events: best {min(hashing):.3f} s")

        async def verify() -> None:
            report = await auditor.verify(services.pool, series, period, None)
            assert report.intact and report.counters[0].events == numbers, report

        verifying = await timed(runs, verify)
        print(
            f"verifying a period of {numbers:,} numbers: best {min(verifying):.3f} s, "
            f"median {statistics.median(verifying):.3f} s ({runs} runs)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    with new_database() as url:
        asyncio.run(measure(url, arguments.numbers, arguments.runs))


if __name__ == "__main__":
    main()
