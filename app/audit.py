"""The audit trail: who changed what, written in the same transaction as the change.

Because the row commits or rolls back with the change, the trail can never claim a change that
did not happen, nor miss one that did.
"""

import json
from typing import Any

from app.database import Connection

INSERT_AUDIT = """
INSERT INTO audit_log (tenant_id, actor, action, series, details)
VALUES ($1, $2, $3, $4, $5::jsonb)
"""

ACTIONS = (
    "series.created",
    "series.changed",
    "series.archived",
    "number.voided",
    "key.created",
    "key.revoked",
)


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
