"""The tenant's audit trail, newest first, filtered by action."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app import audit
from app.admin.session import AdminSessionDep
from app.admin.web import PortalRoute, render
from app.audit import ACTIONS
from app.deps import ServicesDep

router = APIRouter(prefix="/admin", route_class=PortalRoute, include_in_schema=False)

PAGE_SIZE = 50


@router.get("/audit")
async def audit_page(
    request: Request,
    signed_in: AdminSessionDep,
    services: ServicesDep,
    action: Annotated[str, Query(max_length=32)] = "",
    cursor: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    chosen = action if action in ACTIONS else None
    found = await audit.page(
        services.pool,
        signed_in.principal.tenant_id,
        action=chosen,
        series=None,
        cursor=cursor or None,
        limit=PAGE_SIZE,
    )
    return render(
        request,
        "audit.html",
        signed_in=signed_in,
        entries=found.items,
        next_cursor=found.next_cursor,
        cursor=cursor,
        action=chosen or "",
        actions=ACTIONS,
    )
