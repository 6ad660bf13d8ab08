"""A PostgreSQL database of its own: on ``TEST_DATABASE_URL``'s server, or else on the embedded
PostgreSQL under ``.docnum/test``, created empty and dropped afterwards."""

import asyncio
import os
import secrets
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous fixture code, on a loop of its own."""
    return asyncio.new_event_loop().run_until_complete(coroutine)


ROOT = Path(__file__).resolve().parent.parent


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def server_url() -> str:
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        return configured
    from app.database import start_embedded

    return start_embedded(ROOT / ".docnum" / "test")


@contextmanager
def new_database() -> Iterator[str]:
    """Create an empty database on the test server; drop it (and its connections) afterwards."""
    server = server_url()
    name = f"docnum_test_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_async(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(server, name)
    finally:
        run_async(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
