"""SIGTERM stops a real ``docnum serve`` cleanly: it stops accepting connections, answers the
requests already in flight, gives back the unused tail of its cached blocks, and exits 0; within
the grace period and a second even when the database is frozen or gone, with no number answered
twice afterwards."""

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from harness.processes import ServiceProcess, services_side_by_side, start_service
from harness.tenants import Tenant, create_series
from tests.conftest import tenant_on
from tests.support.api import assert_problem
from tests.support.postgres import OwnPostgres
from tests.support.proxies import StallingProxy

EXIT_WITHIN = 20.0
WAIT_WITHIN = 10.0

COUNTER = """
SELECT c.last_value FROM counters c JOIN series s ON s.id = c.series_id
WHERE s.tenant_id = $1 AND s.name = $2
"""
LOCK_COUNTER = """
SELECT c.id FROM counters c JOIN series s ON s.id = c.series_id
WHERE s.tenant_id = $1 AND s.name = $2
FOR UPDATE OF c
"""
# Connections of any service, in this run's database, waiting for a row lock.
WAITING_ON_LOCKS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'docnum' AND wait_event_type = 'Lock'
"""


async def wait_for(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WAIT_WITHIN
    while not await check():
        assert time.monotonic() < deadline, f"not within {WAIT_WITHIN} s: {what}"
        await asyncio.sleep(0.05)


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def test_sigterm_answers_requests_in_flight_and_exits_zero(
    database_url: str, service_dir: Path, pool: asyncpg.Pool, tenant: Tenant
) -> None:
    service = start_service(database_url, service_dir, env={"DOCNUM_LOCK_TIMEOUT_MS": "30000"})
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            # block_size 1: every batch reserves its own run, on its own connection.
            await create_series(client, tenant, "held", mode="cached", block_size=1)
            batch = {"json": {"count": 2}, "headers": tenant.issuer}
            first = await client.post("/series/held/batch", **batch)
            assert first.status_code == 201, first.text

            async with pool.acquire() as conn, conn.transaction():
                assert await conn.fetchval(LOCK_COUNTER, tenant.id, "held") is not None
                in_flight = [
                    asyncio.create_task(client.post("/series/held/batch", **batch))
                    for _ in range(3)
                ]

                async def all_waiting() -> bool:
                    return await pool.fetchval(WAITING_ON_LOCKS) == len(in_flight)

                await wait_for("the requests wait for the counter", all_waiting)
                service.process.send_signal(signal.SIGTERM)
                await wait_for(
                    "new connections are refused", lambda: refuses_connections(service.port)
                )
                assert service.process.poll() is None
                assert not any(task.done() for task in in_flight)
            # The lock is released: the requests in flight go on and are answered.
            responses = await asyncio.gather(*in_flight)

        assert [r.status_code for r in responses] == [201] * len(in_flight), [
            r.text for r in responses
        ]
        values = [v for r in responses for v in r.json()["values"]]
        assert sorted(values) == [3, 4, 5, 6, 7, 8]
        assert service.process.wait(timeout=EXIT_WITHIN) == 0
    finally:
        service.stop()


async def test_sigterm_gives_back_the_unused_tail_of_a_cached_block(
    database_url: str, service_dir: Path, pool: asyncpg.Pool, tenant: Tenant
) -> None:
    service = start_service(database_url, service_dir)
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            await create_series(client, tenant, "tail", mode="cached", block_size=50)
            served = []
            for _ in range(3):
                response = await client.post("/series/tail/next", headers=tenant.issuer)
                assert response.status_code == 201, response.text
                served.append(response.json()["value"])
        assert served == [1, 2, 3]
        assert await pool.fetchval(COUNTER, tenant.id, "tail") == 50  # the whole block reserved

        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=EXIT_WITHIN) == 0
        assert await pool.fetchval(COUNTER, tenant.id, "tail") == served[-1]
    finally:
        service.stop()


GRACE_SECONDS = 2.0
# Requests get no deadline of their own here: only the grace period ends them.
WITHOUT_REQUEST_DEADLINE = {
    "DOCNUM_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
    "DOCNUM_DATABASE_TIMEOUT_MS": "60000",
    "DOCNUM_LOCK_TIMEOUT_MS": "60000",
    "DOCNUM_POOL_TIMEOUT_MS": "60000",
    "DOCNUM_POOL_MIN_SIZE": "4",
    "DOCNUM_POOL_MAX_SIZE": "4",
}
IN_FLIGHT = 3


@dataclass
class Issued:
    """The numbers each Idempotency-Key of a tenant got, per series."""

    tenant: Tenant
    values: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    async def issue(self, client: httpx.AsyncClient, name: str, key: str) -> None:
        """Ask for two numbers; keep them if answered (a 503 or no answer at all gets none)."""
        headers = {**self.tenant.issuer, "Idempotency-Key": key}
        try:
            response = await client.post(
                f"/series/{name}/batch", json={"count": 2}, headers=headers
            )
        except httpx.TransportError:
            return
        if response.status_code == 201:
            got = response.json()["values"]
            assert self.values.setdefault((name, key), got) == got, f"{key} got two answers"
        else:
            assert_problem(response, 503, "unavailable")

    def answered_twice(self) -> list[int]:
        seen: Counter[tuple[str, int]] = Counter(
            (name, v) for (name, _), values in self.values.items() for v in values
        )
        return sorted(v for (_, v), times in seen.items() if times > 1)


async def stop_while_in_flight(
    service: ServiceProcess, issued: Issued, cut_off: Callable[[], Awaitable[None]]
) -> None:
    """Issue, cut the database off, send requests that cannot finish, SIGTERM: the process exits
    within the grace period plus a second."""
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        await create_series(client, issued.tenant, "g", mode="gapless")
        await create_series(client, issued.tenant, "c", mode="cached", ledger=True, block_size=4)
        for name in "gc":
            await issued.issue(client, name, f"{name}-0")
        await cut_off()
        in_flight = [
            asyncio.create_task(issued.issue(client, name, f"{name}-{n}"))
            for name in "gc"
            for n in range(1, IN_FLIGHT + 1)
        ]
        await asyncio.sleep(0.2)  # the requests reach the service
        service.process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(service.process.wait, timeout=GRACE_SECONDS + 1)
        assert exit_code == 0
        await asyncio.gather(*in_flight)


async def issue_again(database_url: str, log_dir: Path, issued: Issued) -> None:
    """The database is back: a new process answers every key, and new ones."""
    async with (
        services_side_by_side(database_url, log_dir, 1) as (again,),
        httpx.AsyncClient(base_url=again.url, timeout=30) as client,
    ):
        for name in "gc":
            for n in range(IN_FLIGHT + 1):
                await issued.issue(client, name, f"{name}-{n}")
                await issued.issue(client, name, f"{name}-new-{n}")
    assert len(issued.values) == 4 * (IN_FLIGHT + 1)


@pytest.mark.xdist_group("processes")
async def test_sigterm_with_a_frozen_database_exits_within_the_grace_period(
    empty_database_url: str, service_dir: Path
) -> None:
    async with StallingProxy(empty_database_url).running() as proxy:
        service = await asyncio.to_thread(
            start_service, proxy.url, service_dir, env=WITHOUT_REQUEST_DEADLINE
        )
        issued = Issued(await tenant_on(empty_database_url))

        async def freeze() -> None:
            proxy.freeze()

        try:
            await stop_while_in_flight(service, issued, freeze)
        finally:
            service.stop()
    await issue_again(empty_database_url, service_dir, issued)
    assert issued.answered_twice() == []


@pytest.mark.xdist_group("processes")
async def test_sigterm_with_the_database_stopped_exits_within_the_grace_period(
    own_postgres: OwnPostgres, service_dir: Path
) -> None:
    service = await asyncio.to_thread(
        start_service, own_postgres.url, service_dir, env=WITHOUT_REQUEST_DEADLINE
    )
    issued = Issued(await tenant_on(own_postgres.url))

    async def stop() -> None:
        await asyncio.to_thread(own_postgres.stop)

    try:
        await stop_while_in_flight(service, issued, stop)
    finally:
        service.stop()
    await asyncio.to_thread(own_postgres.start)
    await issue_again(own_postgres.url, service_dir, issued)
    assert issued.answered_twice() == []


@pytest.mark.xdist_group("processes")
async def test_a_second_sigterm_exits_at_once(empty_database_url: str, service_dir: Path) -> None:
    """A stop that would wait its whole (long) grace period for a frozen database is cut short."""
    long_grace = {**WITHOUT_REQUEST_DEADLINE, "DOCNUM_SHUTDOWN_GRACE_SECONDS": "60"}
    async with StallingProxy(empty_database_url).running() as proxy:
        service = await asyncio.to_thread(start_service, proxy.url, service_dir, env=long_grace)
        try:
            issued = Issued(await tenant_on(empty_database_url))
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                await create_series(client, issued.tenant, "g", mode="gapless")
                proxy.freeze()
                in_flight = asyncio.create_task(issued.issue(client, "g", "stuck"))
                await asyncio.sleep(0.2)  # the request reaches the service
                service.process.send_signal(signal.SIGTERM)
                await wait_for(
                    "new connections are refused", lambda: refuses_connections(service.port)
                )
                assert service.process.poll() is None  # waiting for the request in flight
                service.process.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(service.process.wait, timeout=1) != 0
                await in_flight
            assert issued.values == {}
        finally:
            service.stop()
