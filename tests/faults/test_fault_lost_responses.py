"""A client that never hears the answer retries with the same Idempotency-Key, at another
process, and ends up with exactly one number per key: the lost answer is replayed, no second
number is issued, the ledger holds one row per key and a gapless series keeps no hole."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from harness.load import Load, Target, guarantee_violations, ledger_values, series_per_mode
from harness.processes import SMALL_POOL, ServiceProcess, services_side_by_side
from harness.tenants import Tenant, create_series
from tests.support.database import lock_counters, lock_waiters
from tests.support.proxies import pipe

pytestmark = pytest.mark.xdist_group("processes")

KEYS_PER_MODE = 8


class AnswerDroppingProxy:
    """A loopback TCP proxy that hands each request to the service, waits for the first bytes of
    its answer (so the request was fully served) and then closes both connections, dropping it.
    """

    def __init__(self, upstream: ServiceProcess) -> None:
        self.upstream = upstream
        self.dropped = 0
        self.url = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["AnswerDroppingProxy"]:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server:
            yield self

    async def _relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        service, to_service = await asyncio.open_connection("127.0.0.1", self.upstream.port)
        forward = asyncio.create_task(pipe(client, to_service))
        try:
            if await service.read(65_536):
                self.dropped += 1
        finally:
            forward.cancel()
            for writer in (to_service, to_client):
                writer.close()


async def test_answers_lost_on_the_way_back_are_replayed_by_another_process(
    client: httpx.AsyncClient, tenant: Tenant, database_url: str, service_dir: Path
) -> None:
    targets = await series_per_mode(client, tenant, block_size=5)
    async with (
        services_side_by_side(database_url, service_dir, 2, env=SMALL_POOL) as (first, second),
        AnswerDroppingProxy(first).running() as proxy,
        httpx.AsyncClient(timeout=10) as http,
    ):
        load = Load([proxy.url, second.url], targets)
        kinds = [("next", {}), ("batch", {"count": 3})] * (KEYS_PER_MODE // 2)
        requests = [
            (target, f"{target.series}-{i}", path, body)
            for target in targets
            for i, (path, body) in enumerate(kinds)
        ]
        # One client per request, all at once; an even client number sends its first attempt
        # through the proxy and its retry straight to the second process.
        await asyncio.gather(
            *(load.issue(http, 2 * n, *request) for n, request in enumerate(requests))
        )
        assert load.unexpected == []
        assert load.given_up == []
        assert proxy.dropped == sum(a.lost for a in load.answered.values())
        for target in targets:
            answered = [a for a in load.answered.values() if a.target == target]
            assert len(answered) == KEYS_PER_MODE
            assert await guarantee_violations(http, second.url, target, answered) == []
        for answer in load.answered.values():
            assert answer.lost and answer.replayed and answer.url == second.url, answer


async def test_a_retry_while_the_first_attempt_is_still_blocked_gets_its_number(
    client: httpx.AsyncClient,
    tenant: Tenant,
    pool: asyncpg.Pool,
    database_url: str,
    service_dir: Path,
) -> None:
    """The client gives up on a request stuck behind a row lock and retries elsewhere while the
    first attempt is still waiting: the retry waits for that attempt and replays its answer."""
    await create_series(client, tenant, "slow", mode="gapless")
    slow = Target(tenant, "slow")
    env = {**SMALL_POOL, "DOCNUM_LOCK_TIMEOUT_MS": "10000"}
    async with services_side_by_side(database_url, service_dir, 2, env=env) as (first, second):
        load = Load([first.url, second.url], [slow])
        headers = {**tenant.issuer, "Idempotency-Key": "impatient"}
        async with httpx.AsyncClient(timeout=10) as http:
            assert await load.issue(http, 0, slow, "before", "next", {}) is not None
            async with pool.acquire() as conn, conn.transaction():
                await lock_counters(conn, slow)
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(f"{first.url}/series/slow/next", headers=headers, timeout=0.3)
                retry = asyncio.create_task(
                    http.post(f"{second.url}/series/slow/next", headers=headers)
                )
                # The first attempt waits for the counter, the retry for the first attempt's key.
                await lock_waiters(conn, at_least=2, mine=False)
            response = await retry
            assert response.status_code == 201, response.text
            assert await ledger_values(http, second.url, slow) == [("all", 1), ("all", 2)]
            assert response.json()["value"] == 2
            assert response.headers.get("Idempotent-Replayed") == "true"
