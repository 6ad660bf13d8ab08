"""The audit trail: who changed what, written in the same transaction as the change.

Because the row commits or rolls back with the change, the trail can never claim a change that
did not happen, nor miss one that did.
"""

import json
from collections.abc import Mapping
from typing import Any, get_args

from app import cursors
from app.database import Connection, Executor
from app.schemas import Action, AuditEntry, AuditPage

INSERT_AUDIT = """
INSERT INTO audit_log (tenant_id, actor, action, series, details)
VALUES ($1, $2, $3, $4, $5::jsonb)
"""

# Newest first, on the (tenant_id, id DESC) index; $4 is the id of the last row already seen.
SELECT_AUDIT = """
SELECT id, at, actor, action, series, details::text AS details FROM audit_log
WHERE tenant_id = $1
  AND ($2::text IS NULL OR action = $2)
  AND ($3::text IS NULL OR series = $3)
  AND id < $4
ORDER BY id DESC
LIMIT $5
"""

# Every change of one series' configuration ($2), oldest first.
SELECT_SERIES_HISTORY = """
SELECT id, at, actor, action, series, details::text AS details FROM audit_log
WHERE tenant_id = $1 AND series = $2 AND action LIKE 'series.%'
ORDER BY id
"""

ACTIONS: tuple[str, ...] = get_args(Action)
NEWEST = 2**63 - 1


async def record(
    conn: Connection,
    *,
    tenant_id: int,
    actor: str,
    action: str,
    series: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    assert action in ACTIONS, action
    assert conn.is_in_transaction(), "audit rows belong to the change's own transaction"
    await conn.execute(
        INSERT_AUDIT, tenant_id, actor, action, series, json.dumps(details or {}, default=str)
    )


def _entry(row: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(**{**dict(row), "details": json.loads(row["details"])})


async def series_history(conn: Executor, tenant_id: int, series: str) -> list[AuditEntry]:
    """How a series was configured: its creation and every change since, oldest first."""
    return [_entry(row) for row in await conn.fetch(SELECT_SERIES_HISTORY, tenant_id, series)]


async def page(
    conn: Executor,
    tenant_id: int,
    *,
    action: str | None,
    series: str | None,
    cursor: str | None,
    limit: int,
) -> AuditPage:
    """One page of the tenant's trail, newest first; ``cursor`` is a page's ``next_cursor``."""
    position = cursors.decode("audit", cursor, (int,), lambda p: 0 < int(p[0]) <= NEWEST)
    before = NEWEST if position is None else int(position[0])
    rows = await conn.fetch(SELECT_AUDIT, tenant_id, action, series, before, limit + 1)
    items = [_entry(row) for row in rows[:limit]]
    more = len(rows) > limit
    next_cursor = cursors.encode("audit", (items[-1].id,)) if more else None
    return AuditPage(items=items, next_cursor=next_cursor, has_more=more)
