"""Apply the numbered SQL files in ``migrations/`` once each, in order.

Several replicas may start at once: a session advisory lock lets one apply while the others wait,
then find nothing left to do. Each file runs in its own transaction with the row that records it,
so a failed migration leaves no trace. A file edited after it was applied is refused: the database
would no longer match the code that reads it.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from app.database import Connection

# Any constant works; it only has to be the same in every process of the service.
MIGRATION_LOCK_KEY = 7_301_946_512

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS docnum_migrations (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT name, checksum FROM docnum_migrations"
RECORD_APPLIED = "INSERT INTO docnum_migrations (name, checksum) VALUES ($1, $2)"


class MigrationError(RuntimeError):
    """The database and the migration files disagree; the service must not start on it."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    """The SQL files: inside the package when installed, beside it in a source checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "migrations"
    return packaged if packaged.is_dir() else here.parent / "migrations"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    files = sorted((directory or migrations_dir()).glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [Migration(path.name, path.read_text()) for path in files]


async def pending(conn: Connection, migrations: list[Migration]) -> list[Migration]:
    """Migrations not yet applied; raises MigrationError if an applied file has changed."""
    exists = await conn.fetchval("SELECT to_regclass('docnum_migrations') IS NOT NULL")
    rows = await conn.fetch(SELECT_APPLIED) if exists else []
    applied = {row["name"]: row["checksum"] for row in rows}
    for migration in migrations:
        recorded = applied.get(migration.name)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"migration {migration.name} was edited after it was applied; "
                "restore the original file and add a new migration instead"
            )
    return [m for m in migrations if m.name not in applied]


async def migrate(conn: Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply what is pending; return the names applied (empty when up to date)."""
    todo = migrations if migrations is not None else load_migrations()
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(CREATE_LEDGER)
        applied = []
        for migration in await pending(conn, todo):
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(RECORD_APPLIED, migration.name, migration.checksum)
            applied.append(migration.name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
