"""The audit trail of the caller's tenant, for admin keys."""

from typing import Annotated

from fastapi import APIRouter, Query

from app import audit
from app.audit import Action, AuditPage
from app.deps import AdminDep, PoolDep, admin_problems
from app.schemas import SERIES_NAME_PATTERN

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", summary="Administrative changes, newest first", responses=admin_problems())
async def audit_trail(
    admin: AdminDep,
    pool: PoolDep,
    action: Annotated[Action | None, Query(description="Only this kind of change")] = None,
    series: Annotated[
        str | None, Query(pattern=SERIES_NAME_PATTERN, description="Only changes to this series")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=20, description="next_cursor of a page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AuditPage:
    return await audit.page(
        pool, admin.tenant_id, action=action, series=series, cursor=cursor, limit=limit
    )
