"""Fixtures: a real PostgreSQL with a fresh database per test run, the app over ASGI, and real
``docnum serve`` processes.

The database is the embedded PostgreSQL (started under ``.docnum/test-postgres``) unless
``TEST_DATABASE_URL`` names another server. Each run (each xdist worker) creates its own database
and drops it at the end; each test makes its own tenant, so tests never see each other's data.
"""

import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from harness.database import new_database
from harness.processes import ServiceProcess, start_service
from harness.tenants import Tenant, make_tenant
from tests.support.api import METRICS_TOKEN
from tests.support.postgres import OwnPostgres, ServerPair, server_directory, stop_quietly


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of its own for this run, migrated by the first app that starts on it."""
    with new_database() as url:
        yield url


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A database of its own for one test, with nothing in it, not even migrations."""
    with new_database() as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The shared app's settings. Its deadlines are patient, as ``harness.processes.PATIENT``
    makes the processes': the suite proves what is answered, not how fast, and a slow moment of
    a shared 2-core machine must not turn a slow answer into a 503. The deadlines have tests of
    their own (tests/faults), each with its own settings."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        demo=False,
        auth_cache_seconds=0.5,
        metrics_token=METRICS_TOKEN,
        pool_timeout_ms=10_000,
        database_timeout_ms=30_000,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[object]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def pool(app: object) -> asyncpg.Pool:
    return app.state.services.pool  # type: ignore[attr-defined, no-any-return]


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://docnum.test") as client:
        yield client


@pytest.fixture
async def tenant(pool: asyncpg.Pool) -> Tenant:
    """A fresh tenant with an admin key and an issue key, so tests never share data."""
    return await make_tenant(pool)


async def tenant_on(url: str) -> Tenant:
    """A fresh tenant on another database than the run's own."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        return await make_tenant(pool)
    finally:
        await pool.close()


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Tenant]]:
    """A client of an app of its own, built from ``settings``, and a tenant made through it."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        tenant = await make_tenant(application.state.services.pool)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://docnum.test") as client:
            yield client, tenant


@pytest.fixture
async def other_tenant(pool: asyncpg.Pool) -> Tenant:
    return await make_tenant(pool)


CHROMIUM = "/usr/bin/chromium"
# Without these, Chromium keeps trying to reach Google's hosts, which this machine cannot.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[object]:
    """Headless Debian Chromium driven by Playwright (installed by `make browser`)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="module")
def service(database_url: str, service_dir: Path) -> Iterator[ServiceProcess]:
    """A real ``docnum serve`` process on the session's database, one per test module."""
    started = start_service(database_url, service_dir)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def service_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture
def postgres_dir() -> Iterator[Path]:
    directory = server_directory()
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def own_postgres(postgres_dir: Path) -> Iterator[OwnPostgres]:
    """A PostgreSQL server of the test's own, that it may stop and start."""
    server = OwnPostgres.create(postgres_dir)
    try:
        yield server
    finally:
        stop_quietly(server)


@pytest.fixture
def server_pair(own_postgres: OwnPostgres, postgres_dir: Path) -> Iterator[ServerPair]:
    """A primary and its streaming standby, of the test's own."""
    standby = own_postgres.standby(postgres_dir)
    try:
        yield ServerPair(own_postgres, standby)
    finally:
        stop_quietly(standby)
