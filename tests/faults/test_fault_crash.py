"""A service process killed with SIGKILL under load costs no guarantee.

Sixteen clients issue from a gapless, a sequence and a cached series (both with a ledger) across
three ``docnum serve`` processes. One process is killed in the middle of a gapless transaction:
it has taken a value from the counter and is about to record it (the test holds the ledger row
that value needs, so the transaction stops right there). It is then started again. Clients retry
what went unanswered with the same Idempotency-Key at another process. Afterwards every key holds
one answer, no value went to two keys, each client's values rise, the gapless series have no
hole, every ledger row reached a client, and ``/gaps`` shows exactly what the others skipped.
"""

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest

from harness.load import Load, Target, eventually, guarantee_violations, series_per_mode
from harness.processes import SMALL_POOL, services_side_by_side, start_service
from harness.tenants import Tenant, create_series
from tests.support.database import hold_first_ledger_row, lock_waiters

pytestmark = pytest.mark.xdist_group("processes")

# Answers to wait for in each phase, so that every process is busy around the kill.
PHASE_ANSWERS = 100
FROZEN_AFTERWARDS = 6


async def test_kill_9_mid_transaction_under_load_keeps_every_guarantee(
    client: httpx.AsyncClient,
    tenant: Tenant,
    pool: asyncpg.Pool,
    database_url: str,
    service_dir: Path,
) -> None:
    targets = await series_per_mode(client, tenant, block_size=20)
    await create_series(client, tenant, "frozen", mode="gapless")
    frozen = Target(tenant, "frozen")
    async with (
        services_side_by_side(database_url, service_dir, 3, env=SMALL_POOL) as running,
        httpx.AsyncClient(timeout=10) as http,
    ):
        victim = running[0]
        load = Load([s.url for s in running], targets, clients=16)
        stop = asyncio.Event()
        clients = asyncio.create_task(load.run(stop))
        try:
            await eventually(lambda: len(load.answered) >= PHASE_ANSWERS, "load under way")
            async with pool.acquire() as conn:
                held = conn.transaction()
                await held.start()
                await hold_first_ledger_row(conn, frozen)
                # Client 0 sends its first attempt to the victim, its retries elsewhere.
                cut = asyncio.create_task(load.issue(http, 0, frozen, "cut", "next", {}))
                await lock_waiters(conn, at_least=1)
                victim.kill()
                await held.rollback()
            at_kill = len(load.answered)
            await eventually(
                lambda: len(load.answered) >= at_kill + PHASE_ANSWERS, "others serve on"
            )
            restarted = await asyncio.to_thread(
                start_service, database_url, service_dir, env=SMALL_POOL
            )
            running.append(restarted)
            load.urls[0] = restarted.url
            await eventually(
                lambda: any(a.url == restarted.url for a in load.answered.values()),
                "the restarted process serves",
            )
        finally:
            stop.set()
            await clients
        await cut
        for n in range(1, FROZEN_AFTERWARDS + 1):
            await load.issue(http, n, frozen, f"after-{n}", "next", {})

        assert load.unexpected == []
        assert load.given_up == []
        url = running[1].url
        for target in [*targets, frozen]:
            answered = [a for a in load.answered.values() if a.target == target]
            assert await guarantee_violations(http, url, target, answered) == []
        retried = [key for key, answer in load.answered.items() if answer.attempts > 1]
        assert await load.replay_violations(http, retried) == []
        # The victim died holding the request: its client heard nothing and retried elsewhere.
        assert load.answered["cut"].lost == 1
        assert load.answered["cut"].values == [1]
