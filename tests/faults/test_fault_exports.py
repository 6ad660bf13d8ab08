"""CSV exports against a real ``docnum serve`` process: slow readers never starve issuing, past
the per-process limit an export is refused with a 503 problem, and an export that cannot be
finished is cut, never ended as if complete.

A slow reader is an HTTP client with a small socket receive buffer that stops reading after the
headers: the server's sending then blocks on it, as it would on a client far away or stuck.
"""

import asyncio
import csv
import io
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from harness.load import Target
from harness.processes import ServiceProcess, start_service
from harness.tenants import Tenant, create_series
from tests.conftest import tenant_on
from tests.support.api import assert_problem
from tests.support.database import lock_counters, lock_waiters
from tests.support.postgres import OwnPostgres

pytestmark = pytest.mark.xdist_group("processes")

# About 9 MB of CSV: more than the socket buffers between server and reader can take (the
# kernel grows a sending buffer up to 4 MB), so the server's sending waits on the reader.
ROWS = 60_000
EXPORTS = 2
SERVICE_ENV = {
    "DOCNUM_LOG_LEVEL": "warning",
    "DOCNUM_POOL_MIN_SIZE": "1",
    "DOCNUM_POOL_MAX_SIZE": "2",
    # Waits long enough for a busy machine: a request that waits for a connection or a lock
    # the test holds keeps waiting for as long as the test needs, and never passes its
    # deadline first (which is kept above the lock timeout, as the settings ask).
    "DOCNUM_POOL_TIMEOUT_MS": "2000",
    "DOCNUM_LOCK_TIMEOUT_MS": "10000",
    "DOCNUM_DATABASE_TIMEOUT_MS": "15000",
    "DOCNUM_AUTH_CACHE_SECONDS": "60",
    "DOCNUM_MAX_CONCURRENT_EXPORTS": str(EXPORTS),
}
CSV = {"Accept": "text/csv"}
# Ledger rows for the values 1 to $3 of a series, with long numbers, as issuing would have
# recorded them.
RECORD_VALUES = """
INSERT INTO numbers (series_id, period, value, number, date)
SELECT s.id, 'all', v, 'BIG-' || lpad(v::text, 60, '0'), current_date
FROM series AS s, generate_series(1, $3::bigint) AS v
WHERE s.tenant_id = $1 AND s.name = $2
"""
IN_USE = re.compile(r'^docnum_db_pool_connections\{state="in_use"\} (\S+)$', re.MULTILINE)


@pytest.fixture(scope="module")
def service(database_url: str, service_dir: Path) -> Iterator[ServiceProcess]:
    started = start_service(database_url, service_dir, env=SERVICE_ENV)
    try:
        yield started
    finally:
        started.stop()


@asynccontextmanager
async def slow_readers(
    url: str, tenant: Tenant, count: int, path: str = "/series/big/numbers"
) -> AsyncIterator[list[httpx.Response]]:
    """``count`` exports whose headers have arrived and whose bodies nobody reads yet."""
    small_buffer = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 131_072)]
    async with AsyncExitStack() as stack:
        responses = []
        for _ in range(count):
            transport = httpx.AsyncHTTPTransport(socket_options=small_buffer)
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, transport=transport, timeout=10)
            )
            response = await stack.enter_async_context(
                http.stream("GET", path, headers={**tenant.issuer, **CSV})
            )
            assert response.status_code == 200
            responses.append(response)
        yield responses


async def connections_in_use(http: httpx.AsyncClient) -> int:
    response = await http.get("/metrics")
    found = IN_USE.search(response.text)
    assert found, response.text
    return int(float(found.group(1)))


def csv_values(body: bytes) -> list[int]:
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    return [int(row["value"]) for row in rows]


async def test_slow_csv_readers_hold_no_connection_and_issuing_keeps_answering(
    service: ServiceProcess, client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "big", format="BIG-{seq}")
    await create_series(client, tenant, "g")
    await pool.execute(RECORD_VALUES, tenant.id, "big", ROWS)

    async with (
        httpx.AsyncClient(base_url=service.url, timeout=5) as http,
        slow_readers(service.url, tenant, EXPORTS) as readers,
    ):
        refused = await http.get("/series/big/numbers", headers={**tenant.issuer, **CSV})
        assert_problem(refused, 503, "too-many-exports")
        assert refused.headers["Retry-After"].isdigit()
        # The exports wait on their readers without a connection (nor a transaction) held.
        deadline = time.monotonic() + 10
        while (in_use := await connections_in_use(http)) != 0:
            assert time.monotonic() < deadline, f"{in_use} connections held by the exports"
            await asyncio.sleep(0.05)
        # Issuing has the whole pool: each request answers within the client's timeout.
        for expected in range(1, 21):
            response = await http.post("/series/g/next", headers=tenant.issuer)
            assert response.status_code == 201, response.text
            assert response.json()["value"] == expected

        # Read at last, each export is the whole ledger, once each row, in order.
        for reader in readers:
            assert csv_values(await reader.aread()) == list(range(1, ROWS + 1))

        # Their slots were given back.
        again = await http.get(
            "/series/big/numbers?status=voided", headers={**tenant.issuer, **CSV}
        )
        assert again.status_code == 200, again.text
        assert again.text.startswith("period,variables,value,number")


async def test_an_export_that_gets_no_connection_in_time_is_a_503_problem(
    service: ServiceProcess, client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """Both pool connections wait for counter locks the test holds; the export must say 503
    before it sends anything, not send a 200 it cannot finish."""
    await create_series(client, tenant, "big", format="BIG-{seq}")
    held = [Target(tenant, name) for name in ("h1", "h2")]
    async with httpx.AsyncClient(base_url=service.url, timeout=15) as http:
        for target in held:
            await create_series(client, tenant, target.series)
            first = await http.post(f"/series/{target.series}/next", headers=tenant.issuer)
            assert first.status_code == 201, first.text
        # The series is now in the process's catalog: the export needs a connection for its
        # rows only.
        warm = await http.get("/series/big/numbers", headers=tenant.issuer)
        assert warm.status_code == 200, warm.text
        async with pool.acquire() as holder, holder.transaction():
            for target in held:
                await lock_counters(holder, target)
            waiting = [
                asyncio.create_task(http.post(f"/series/{t.series}/next", headers=tenant.issuer))
                for t in held
            ]
            await lock_waiters(holder, at_least=len(held))
            refused = await http.get("/series/big/numbers", headers={**tenant.issuer, **CSV})
            assert_problem(refused, 503, "unavailable")
            assert refused.headers["Retry-After"].isdigit()
        for task in waiting:
            assert (await task).status_code == 201
        exported = await http.get("/series/big/numbers", headers={**tenant.issuer, **CSV})
        assert exported.status_code == 200, exported.text


async def test_an_export_cut_by_the_database_going_away_is_a_broken_transfer(
    own_postgres: OwnPostgres, service_dir: Path
) -> None:
    service = start_service(own_postgres.url, service_dir, env=SERVICE_ENV)
    try:
        tenant = await tenant_on(own_postgres.url)
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as admin:
            await create_series(admin, tenant, "big", format="BIG-{seq}")
        conn = await asyncpg.connect(own_postgres.url)
        try:
            await conn.execute(RECORD_VALUES, tenant.id, "big", ROWS)
        finally:
            await conn.close()

        async with slow_readers(service.url, tenant, 1) as (reader,):
            received = b""
            chunks = reader.aiter_bytes()
            received += await anext(chunks)
            await asyncio.to_thread(own_postgres.stop)
            with pytest.raises(httpx.RemoteProtocolError):
                async for chunk in chunks:
                    received += chunk
        assert received.startswith(b"period,variables,value,number")
        assert len(csv_values(received.rpartition(b"\r\n")[0])) < ROWS
    finally:
        service.stop()
