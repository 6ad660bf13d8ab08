"""Tenants and their API keys: the SQL behind the CLI, the API and the portal."""

from pydantic import TypeAdapter

from app import audit, cursors
from app.auth import Scope, new_key
from app.database import Connection, Executor
from app.problems import KeyNotFound, TenantNotFound
from app.schemas import MAX_BIGINT, KeyName, KeyOut, KeyPage, NewKey

ENSURE_TENANT = """
WITH made AS (INSERT INTO tenants (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id)
SELECT id FROM made UNION ALL SELECT id FROM tenants WHERE name = $1
LIMIT 1
"""
FIND_TENANT = "SELECT id FROM tenants WHERE name = $1"
COUNT_TENANTS = "SELECT count(*) FROM tenants"
INSERT_KEY = """
INSERT INTO api_keys (tenant_id, prefix, secret_hash, scope, name)
VALUES ($1, $2, $3, $4, $5)
RETURNING prefix, scope, name, created_at, last_used_at, revoked_at
"""
LIST_KEYS = """
SELECT prefix, scope, name, created_at, last_used_at, revoked_at FROM api_keys
WHERE tenant_id = $1 AND (revoked_at IS NULL OR $2)
ORDER BY created_at, id
"""
# Keyset paging on the id, which follows creation order; $3 is the id of the last key already seen.
PAGE_KEYS = """
SELECT id, prefix, scope, name, created_at, last_used_at, revoked_at FROM api_keys
WHERE tenant_id = $1 AND (revoked_at IS NULL OR $2) AND id > $3
ORDER BY id
LIMIT $4
"""
REVOKE_KEY = """
UPDATE api_keys SET revoked_at = now()
WHERE tenant_id = $1 AND prefix = $2 AND revoked_at IS NULL
RETURNING prefix, scope, name, created_at, last_used_at, revoked_at
"""
KEY_EXISTS = "SELECT EXISTS (SELECT 1 FROM api_keys WHERE tenant_id = $1 AND prefix = $2)"

_KEY_NAME = TypeAdapter(KeyName)


def key_name(value: str) -> str:
    """A name given outside the JSON API (the command line), checked by the API's rule."""
    return _KEY_NAME.validate_python(value)


async def ensure_tenant(conn: Executor, name: str) -> int:
    tenant_id: int = await conn.fetchval(ENSURE_TENANT, name)
    return tenant_id


async def tenant_id(conn: Executor, name: str) -> int:
    found: int | None = await conn.fetchval(FIND_TENANT, name)
    if found is None:
        raise TenantNotFound(f"No tenant named {name!r}.")
    return found


async def create(
    conn: Connection, tenant_id: int, scope: Scope, name: str, *, actor: str
) -> NewKey:
    key, prefix, digest = new_key()
    async with conn.transaction():
        row = await conn.fetchrow(INSERT_KEY, tenant_id, prefix, digest, scope, name)
        assert row is not None
        await audit.record(
            conn,
            tenant_id=tenant_id,
            actor=actor,
            action="key.created",
            details={"prefix": prefix, "scope": scope, "name": name},
        )
    return NewKey(key=key, **dict(row))


async def listing(conn: Executor, tenant_id: int, *, include_revoked: bool) -> list[KeyOut]:
    return [KeyOut(**dict(r)) for r in await conn.fetch(LIST_KEYS, tenant_id, include_revoked)]


async def page(
    conn: Executor, tenant_id: int, *, include_revoked: bool, cursor: str | None, limit: int
) -> KeyPage:
    """One page of the tenant's keys, oldest first; ``cursor`` is a page's ``next_cursor``."""
    position = cursors.decode("keys", cursor, (int,), lambda p: 0 <= int(p[0]) <= MAX_BIGINT)
    after = 0 if position is None else int(position[0])
    rows = await conn.fetch(PAGE_KEYS, tenant_id, include_revoked, after, limit + 1)
    items = [KeyOut(**{k: v for k, v in r.items() if k != "id"}) for r in rows[:limit]]
    more = len(rows) > limit
    next_cursor = cursors.encode("keys", (rows[limit - 1]["id"],)) if more else None
    return KeyPage(items=items, next_cursor=next_cursor, has_more=more)


async def revoke(conn: Connection, tenant_id: int, prefix: str, *, actor: str) -> KeyOut:
    """Revoke a key; revoking a revoked key changes nothing and is not an error."""
    async with conn.transaction():
        row = await conn.fetchrow(REVOKE_KEY, tenant_id, prefix)
        if row is None:
            if not await conn.fetchval(KEY_EXISTS, tenant_id, prefix):
                raise KeyNotFound(f"No key with prefix {prefix!r}.")
            rows = await conn.fetch(LIST_KEYS, tenant_id, True)
            return next(KeyOut(**dict(r)) for r in rows if r["prefix"] == prefix)
        await audit.record(
            conn,
            tenant_id=tenant_id,
            actor=actor,
            action="key.revoked",
            details={"prefix": prefix, "name": row["name"]},
        )
    return KeyOut(**dict(row))
