"""A database that accepts no writes, as a client sees one right after a failover landed it on a
standby or during a switchover: issuing answers 503 with Retry-After (never 500), reading keeps
working (authentication writes nothing), ``/readyz`` says 503, and once the database accepts
writes again the service issues again by itself, without a restart."""

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from app.settings import Settings
from harness.database import server_url
from harness.tenants import Tenant, create_series
from tests.conftest import app_client
from tests.support.api import assert_problem
from tests.support.issuing import ISSUING_PATHS, issue_by_path, issues_again

RECOVERY_SECONDS = 10.0
# What a failover does to the sessions of the old server: they end, and new ones land read-only.
TERMINATE_SESSIONS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = $1 AND pid <> pg_backend_pid()
"""


class Database:
    """The test's own database, which it may make read-only and writable again."""

    def __init__(self, url: str) -> None:
        self.name = urlsplit(url).path.lstrip("/")

    async def read_only(self, on: bool) -> None:
        conn = await asyncpg.connect(server_url())
        try:
            setting = "SET default_transaction_read_only = on" if on else "RESET ALL"
            await conn.execute(f'ALTER DATABASE "{self.name}" {setting}')
            await conn.fetchval(TERMINATE_SESSIONS, self.name)
        finally:
            await conn.close()


@pytest.fixture
async def own(
    empty_database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Tenant]]:
    """A client of an app on a database of its own; keys are re-read on every request."""
    settings = Settings(
        database_url=empty_database_url, data_dir=tmp_path, demo=False, auth_cache_seconds=0
    )
    async with app_client(settings) as (client, tenant):
        yield client, tenant


async def test_a_read_only_database_answers_503_and_the_service_recovers_by_itself(
    own: tuple[httpx.AsyncClient, Tenant], empty_database_url: str
) -> None:
    client, tenant = own
    for name, fields in ISSUING_PATHS.items():
        await create_series(client, tenant, name, **fields)
    database = Database(empty_database_url)
    await database.read_only(True)
    try:
        for name in ISSUING_PATHS:
            response = await issue_by_path(client, tenant, name, "read-only")
            assert_problem(response, 503, "unavailable")
            assert response.headers["Retry-After"].isdigit()
        listed = await client.get("/series", headers=tenant.issuer)
        assert listed.status_code == 200, listed.text
        assert_problem(await client.get("/readyz"), 503, "unavailable")
    finally:
        await database.read_only(False)

    await issues_again(client, tenant, within=RECOVERY_SECONDS)
