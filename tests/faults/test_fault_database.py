"""PostgreSQL stopped and started again under load: the service answers 503 while it is gone and
recovers by itself when it is back, and no guarantee is lost.

The test runs a PostgreSQL of its own (embedded, in a temporary directory) so it may stop it. It
stops it in ``immediate`` mode, as a crash would: no checkpoint, recovery from the WAL at start.
It runs twice: with the processes connected directly, and through PgBouncer in transaction
pooling mode, which stays up while PostgreSQL goes away and comes back.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from harness.load import Load, Target, eventually, guarantee_violations, load_resumes
from harness.processes import ServiceProcess, services_side_by_side
from harness.tenants import Tenant, create_series
from tests.conftest import tenant_on
from tests.support.api import assert_problem
from tests.support.database import hold_first_ledger_row, lock_waiters
from tests.support.pgbouncer import ROUTES, reached_by
from tests.support.postgres import OwnPostgres

pytestmark = pytest.mark.xdist_group("processes")

PHASE_ANSWERS = 150
# How long the whole answer may take while the database is down.
DOWN_ANSWER_SECONDS = 2.0
RECOVERY_SECONDS = 10.0
FROZEN_AFTERWARDS = 6
SERIES: dict[str, dict[str, object]] = {
    "gapless": {"mode": "gapless"},
    "sequence": {"mode": "sequence", "ledger": True},
    "cached": {"mode": "cached", "ledger": True, "block_size": 20},
    "frozen": {"mode": "gapless"},
    "fmt": {"mode": "sequence", "format": "A-{seq}"},
}
LISTENERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()
"""


async def answers_unavailable_in_time(
    http: httpx.AsyncClient, service: ServiceProcess, tenant: Tenant
) -> None:
    """Issuing and readiness answer 503 problems with Retry-After, in full, within the bound."""
    for series in ("gapless", "sequence", "cached"):
        async with asyncio.timeout(DOWN_ANSWER_SECONDS):
            response = await http.post(
                f"{service.url}/series/{series}/next",
                headers={**tenant.issuer, "Idempotency-Key": f"while-down-{series}"},
            )
        assert_problem(response, 503, "unavailable")
        assert response.headers["Retry-After"].isdigit()
    async with asyncio.timeout(DOWN_ANSWER_SECONDS):
        ready = await http.get(f"{service.url}/readyz")
    assert_problem(ready, 503, "unavailable")


async def listeners(url: str) -> int:
    """How many connections listen for series changes (one per process once it is back)."""
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(LISTENERS)
        return count
    finally:
        await conn.close()


async def issue_number(http: httpx.AsyncClient, service: ServiceProcess, target: Target) -> str:
    response = await http.post(
        f"{service.url}/series/{target.series}/next", headers=target.tenant.issuer
    )
    assert response.status_code == 201, response.text
    number: str = response.json()["number"]
    return number


@contextlib.asynccontextmanager
async def two_services(
    route: str, server: OwnPostgres, service_dir: Path
) -> AsyncIterator[list[ServiceProcess]]:
    """Two processes on ``server``, connected directly or through PgBouncer."""
    with reached_by(route, server.url) as (url, env):
        async with services_side_by_side(url, service_dir, 2, env=env) as running:
            yield running


@pytest.mark.parametrize("route", ROUTES)
async def test_database_restart_mid_load_is_survived_without_a_service_restart(
    own_postgres: OwnPostgres, service_dir: Path, route: str
) -> None:
    async with (
        two_services(route, own_postgres, service_dir) as running,
        httpx.AsyncClient(timeout=10) as http,
    ):
        first, second = running
        tenant = await tenant_on(own_postgres.url)
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as admin:
            for name, fields in SERIES.items():
                await create_series(admin, tenant, name, **fields)
        targets = [Target(tenant, name) for name in ("gapless", "sequence", "cached")]
        frozen = Target(tenant, "frozen")

        load = Load([s.url for s in running], targets, clients=16)
        stop = asyncio.Event()
        clients = asyncio.create_task(load.run(stop))
        try:
            await eventually(lambda: len(load.answered) >= PHASE_ANSWERS, "load under way")
            # A gapless transaction is open, between taking its value and committing, when the
            # database goes away.
            holder = await asyncpg.connect(own_postgres.url)
            await holder.execute("BEGIN")
            await hold_first_ledger_row(holder, frozen)
            cut = asyncio.create_task(load.issue(http, 0, frozen, "cut", "next", {}))
            await lock_waiters(holder, at_least=1)
            await asyncio.to_thread(own_postgres.stop)
            holder.terminate()
            for service in running:
                await answers_unavailable_in_time(http, service, tenant)
            await asyncio.sleep(1.0)  # the clients keep trying against the stopped database
            await asyncio.to_thread(own_postgres.start)
            await load_resumes(load, [s.url for s in running], PHASE_ANSWERS, RECOVERY_SECONDS)
        finally:
            stop.set()
            await clients
        await cut
        for n in range(1, FROZEN_AFTERWARDS + 1):
            await load.issue(http, n, frozen, f"after-{n}", "next", {})

        assert all(service.process.poll() is None for service in running), "a process restarted"
        assert load.unexpected == []
        assert load.given_up == []
        assert not load.retried["ReadTimeout"], load.retried
        for target in [*targets, frozen]:
            answered = [a for a in load.answered.values() if a.target == target]
            assert await guarantee_violations(http, first.url, target, answered) == []
        retried = [key for key, answer in load.answered.items() if answer.attempts > 1]
        assert await load.replay_violations(http, retried) == []
        assert load.retried["503 /problems/unavailable"], load.retried
        assert load.answered["cut"].values == [1]

        # Both processes listen for series changes again, so a cached definition follows a
        # change made through the other process.
        deadline = time.monotonic() + RECOVERY_SECONDS
        while await listeners(own_postgres.url) < len(running):
            assert time.monotonic() < deadline, "the series-change listeners are not back"
            await asyncio.sleep(0.1)
        fmt = Target(tenant, "fmt")
        assert (await issue_number(http, second, fmt)).startswith("A-")  # now cached
        changed = await http.patch(
            f"{first.url}/series/fmt", json={"format": "B-{seq}"}, headers=tenant.admin
        )
        assert changed.status_code == 200, changed.text
        deadline = time.monotonic() + RECOVERY_SECONDS
        while (await issue_number(http, second, fmt)).startswith("A-"):
            assert time.monotonic() < deadline, "the other process kept a stale definition"
            await asyncio.sleep(0.1)
