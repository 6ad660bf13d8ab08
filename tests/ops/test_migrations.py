"""Migrations: applied once, in order, atomically, safely from several processes at once."""

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from app.migrate import MIGRATION_LOCK_KEY, MigrationError, load_migrations, migrate
from harness.processes import DATABASE_VARIABLES, free_port

Connect = Callable[[], Awaitable[asyncpg.Connection]]

DOCNUM = Path(sys.executable).with_name("docnum")
WAITS_FOR_ADVISORY_LOCK = """
SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted)
"""


@pytest.fixture
async def connect(empty_database_url: str) -> AsyncIterator[Connect]:
    """Opens connections to a database of the test's own; closes them after the test."""
    opened: list[asyncpg.Connection] = []

    async def open_one() -> asyncpg.Connection:
        conn = await asyncpg.connect(empty_database_url)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        await conn.close()


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def recorded(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT name FROM docnum_migrations ORDER BY applied_at, name")
    return [row["name"] for row in rows]


async def test_a_fresh_database_gets_every_migration(connect: Connect) -> None:
    conn = await connect()
    shipped = load_migrations()
    assert shipped and shipped[0].name == "0001_initial.sql"
    assert await migrate(conn) == [m.name for m in shipped]
    rows = await conn.fetch("SELECT name, checksum FROM docnum_migrations ORDER BY name")
    assert [(r["name"], r["checksum"]) for r in rows] == [(m.name, m.checksum) for m in shipped]
    for table in ("tenants", "api_keys", "series", "counters", "numbers", "audit_log"):
        assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table), table
    assert await migrate(conn) == []


async def test_files_apply_in_numeric_order_and_only_once(connect: Connect, tmp_path: Path) -> None:
    # Each file needs the one before it, so any other order fails.
    directory = write(
        tmp_path / "m",
        {
            "0010_third.sql": "ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT 3",
            "0001_first.sql": "CREATE TABLE t (a int)",
            "0002_second.sql": "ALTER TABLE t ADD COLUMN b int; INSERT INTO t (a, b) VALUES (1, 2)",
            "README.md": "not a migration",
            "1_short.sql": "SELECT 1/0",
            "0003-no-underscore.sql": "SELECT 1/0",
        },
    )
    conn = await connect()
    first = ["0001_first.sql", "0002_second.sql", "0010_third.sql"]
    assert await migrate(conn, load_migrations(directory)) == first
    assert await recorded(conn) == first
    assert await migrate(conn, load_migrations(directory)) == []
    assert [tuple(row) for row in await conn.fetch("SELECT a, b, c FROM t")] == [(1, 2, 3)]

    write(directory, {"0011_fourth.sql": "INSERT INTO t (a, b) VALUES (4, 5)"})
    assert await migrate(conn, load_migrations(directory)) == ["0011_fourth.sql"]
    assert await conn.fetchval("SELECT count(*) FROM t") == 2


async def test_an_edited_migration_is_refused(connect: Connect, tmp_path: Path) -> None:
    directory = write(tmp_path / "m", {"0001_first.sql": "CREATE TABLE t (a int)"})
    conn = await connect()
    await migrate(conn, load_migrations(directory))
    write(
        directory,
        {
            "0001_first.sql": "CREATE TABLE t (a bigint)",
            "0002_second.sql": "CREATE TABLE u (a int)",
        },
    )
    with pytest.raises(MigrationError, match=r"0001_first\.sql was edited after it was applied"):
        await migrate(conn, load_migrations(directory))
    # Nothing after the edited file was applied either, and the lock was let go.
    assert await recorded(conn) == ["0001_first.sql"]
    assert not await conn.fetchval("SELECT to_regclass('u') IS NOT NULL")
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    assert await conn.fetchval(held) == 0


async def test_a_failing_migration_leaves_no_trace(connect: Connect, tmp_path: Path) -> None:
    directory = write(
        tmp_path / "m",
        {
            "0001_first.sql": "CREATE TABLE t (a int)",
            "0002_broken.sql": "CREATE TABLE half (a int); SELECT 1/0",
        },
    )
    conn = await connect()
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(conn, load_migrations(directory))
    assert await recorded(conn) == ["0001_first.sql"]
    assert not await conn.fetchval("SELECT to_regclass('half') IS NOT NULL")
    # Fixed, it applies on the next run, from another connection: the lock was released.
    write(directory, {"0002_broken.sql": "CREATE TABLE half (a int)"})
    other = await connect()
    assert await asyncio.wait_for(migrate(other, load_migrations(directory)), 10) == [
        "0002_broken.sql"
    ]


async def test_concurrent_migrations_apply_each_file_once(connect: Connect) -> None:
    connections = [await connect() for _ in range(4)]
    results = await asyncio.gather(*(migrate(conn) for conn in connections))
    shipped = [m.name for m in load_migrations()]
    assert sorted(results, key=len) == [[], [], [], shipped]
    assert await recorded(connections[0]) == shipped


async def test_a_migration_waits_for_the_one_in_progress(connect: Connect) -> None:
    holder, waiter = await connect(), await connect()
    await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    waiting = asyncio.create_task(migrate(waiter))

    async def blocked() -> None:
        while not await holder.fetchval(WAITS_FOR_ADVISORY_LOCK, waiter.get_server_pid()):
            assert not waiting.done(), "migrate() did not wait for the lock"
            await asyncio.sleep(0.01)

    await asyncio.wait_for(blocked(), 10)
    assert not await holder.fetchval("SELECT to_regclass('docnum_migrations') IS NOT NULL")
    await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    assert await asyncio.wait_for(waiting, 10) == [m.name for m in load_migrations()]


def run_docnum(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in DATABASE_VARIABLES}
    return subprocess.run(
        [str(DOCNUM), *args],
        env={**environment, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_migrate_command_brings_a_database_up_to_date(
    connect: Connect, empty_database_url: str
) -> None:
    done = run_docnum("migrate", database_url=empty_database_url)
    assert done.returncode == 0, done.stderr
    assert "migrations are up to date" in done.stderr
    assert await recorded(await connect()) == [m.name for m in load_migrations()]


async def test_the_migrate_command_refuses_an_edited_migration(
    connect: Connect, empty_database_url: str
) -> None:
    conn = await connect()
    await migrate(conn)
    await conn.execute("UPDATE docnum_migrations SET checksum = 'something else'")
    done = run_docnum("migrate", database_url=empty_database_url)
    assert done.returncode != 0
    assert "0001_initial.sql was edited after it was applied" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_migrate_command_says_when_the_database_is_unreachable() -> None:
    closed = f"postgresql://docnum@127.0.0.1:{free_port()}/docnum"
    done = run_docnum("migrate", database_url=closed)
    assert done.returncode != 0
    assert "cannot connect to the database" in done.stderr
    assert "Traceback" not in done.stderr
