"""The audit trail of the caller's tenant, for admin keys."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app import audit
from app.deps import AdminDep, CursorQuery, PoolDep, admin_problems, link_next, success_headers
from app.schemas import SERIES_NAME_PATTERN, Action, AuditPage

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get(
    "",
    summary="Administrative changes, newest first",
    responses={**success_headers(200, "Link"), **admin_problems()},
)
async def list_audit_entries(
    admin: AdminDep,
    pool: PoolDep,
    request: Request,
    response: Response,
    action: Annotated[Action | None, Query(description="Only this kind of change")] = None,
    series: Annotated[
        str | None, Query(pattern=SERIES_NAME_PATTERN, description="Only changes to this series")
    ] = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AuditPage:
    found = await audit.page(
        pool, admin.tenant_id, action=action, series=series, cursor=cursor, limit=limit
    )
    link_next(request, response, found.next_cursor)
    return found
