"""Liveness and readiness: ready only while the database answers and every migration is applied."""

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from app.main import create_app
from app.migrate import load_migrations
from app.settings import Settings
from harness.database import server_url
from tests.support.api import assert_problem


async def test_healthz_answers_without_a_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ready_with_a_migrated_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}


@pytest.fixture
async def own_client(empty_database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app of its own, on a database of its own that the test may break."""
    settings = Settings(database_url=empty_database_url, data_dir=tmp_path, demo=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://docnum.test") as client:
            yield client


async def admin_sql(database_url: str, sql: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_readyz_is_503_while_a_migration_is_missing(
    own_client: httpx.AsyncClient, empty_database_url: str
) -> None:
    assert (await own_client.get("/readyz")).status_code == 200
    newest = load_migrations()[-1]
    await admin_sql(
        empty_database_url, f"DELETE FROM docnum_migrations WHERE name = '{newest.name}'"
    )
    response = await own_client.get("/readyz")
    body = assert_problem(response, 503, "unavailable")
    assert "1 migrations are not applied" in body["detail"]
    assert response.headers["retry-after"] == "1"
    # Liveness does not depend on the database.
    assert (await own_client.get("/healthz")).status_code == 200


async def test_readyz_is_503_while_the_database_refuses_connections(
    own_client: httpx.AsyncClient, empty_database_url: str
) -> None:
    name = urlsplit(empty_database_url).path.lstrip("/")
    server = server_url()
    await admin_sql(server, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    await admin_sql(
        server,
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )
    try:
        response = await own_client.get("/readyz")
        body = assert_problem(response, 503, "unavailable")
        assert "not reachable" in body["detail"]
        assert "postgresql://" not in response.text
        assert (await own_client.get("/healthz")).status_code == 200
    finally:
        await admin_sql(server, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    # Ready again as soon as the database is back: the pool reconnects on its own.
    recovered = await own_client.get("/readyz")
    assert recovered.status_code == 200, recovered.text
