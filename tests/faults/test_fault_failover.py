"""The primary dies under load and its synchronous standby is promoted: two ``docnum serve``
processes with a URL naming both servers follow to the promoted server without a restart. One
asks for the writable server (``target_session_attrs=read-write``); the other does not, so until
the promotion it reaches a standby that refuses writes: both answer 503 meanwhile, never 500, and
neither says it is ready. No number reaches two keys, every key gets its number, and a gapless
series has no hole: whatever a client was answered had reached the standby before the answer
(synchronous commit), so the promoted server never issues it again."""

import asyncio
from pathlib import Path

import httpx
import pytest

from harness.load import Load, eventually, guarantee_violations, load_resumes, series_per_mode
from harness.processes import SMALL_POOL, services_side_by_side
from tests.conftest import tenant_on
from tests.support.api import assert_problem
from tests.support.postgres import ServerPair

pytestmark = pytest.mark.xdist_group("processes")

PHASE_ANSWERS = 60
UNAVAILABLE_ANSWERS = 20
FOLLOW_SECONDS = 20.0
# Short deadlines, so requests caught by the failover are answered 503 and retried quickly.
FAST = {
    **SMALL_POOL,
    "DOCNUM_POOL_TIMEOUT_MS": "1000",
    "DOCNUM_DATABASE_TIMEOUT_MS": "2000",
    "DOCNUM_LOCK_TIMEOUT_MS": "1000",
    "DOCNUM_CONNECT_TIMEOUT_MS": "1000",
}


async def test_a_promoted_standby_is_followed_under_load_without_duplicates_or_holes(
    server_pair: ServerPair, service_dir: Path
) -> None:
    await server_pair.synchronous()
    async with (
        services_side_by_side(server_pair.url, service_dir, 1, env=FAST) as (writable,),
        services_side_by_side(server_pair.any_url, service_dir, 1, env=FAST) as (any_server,),
        httpx.AsyncClient(timeout=10) as http,
    ):
        running = [writable, any_server]
        tenant = await tenant_on(server_pair.primary.url)
        async with httpx.AsyncClient(base_url=running[0].url, timeout=10) as admin:
            targets = await series_per_mode(admin, tenant, block_size=10)
        load = Load([s.url for s in running], targets, clients=8)
        stop = asyncio.Event()
        clients = asyncio.create_task(load.run(stop))
        try:
            await eventually(lambda: len(load.answered) >= PHASE_ANSWERS, "load under way")
            # The primary dies; until the standby is promoted, no server accepts writes.
            await asyncio.to_thread(server_pair.primary.stop, "immediate")
            retried = sum(load.retried.values())
            await eventually(
                lambda: sum(load.retried.values()) >= retried + UNAVAILABLE_ANSWERS,
                "clients are told to retry while no server accepts writes",
            )
            for service in running:
                assert_problem(await http.get(f"{service.url}/readyz"), 503, "unavailable")
            await asyncio.to_thread(server_pair.standby.promote)
            await load_resumes(load, [s.url for s in running], PHASE_ANSWERS, FOLLOW_SECONDS)
        finally:
            stop.set()
            await clients

        assert all(service.process.poll() is None for service in running), "a process restarted"
        assert load.unexpected == []
        assert load.given_up == []
        for target in targets:
            answered = [a for a in load.answered.values() if a.target == target]
            assert await guarantee_violations(http, running[0].url, target, answered) == []
        retried = [key for key, answer in load.answered.items() if answer.attempts > 1]
        assert await load.replay_violations(http, retried) == []
