"""SIGTERM stops a real ``docnum serve`` cleanly: it stops accepting connections, answers the
requests already in flight, gives back the unused tail of its cached blocks, and exits 0."""

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx

from tests.support import Tenant, create_series, start_service

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
