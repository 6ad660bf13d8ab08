"""The tenant's API keys: list, create (the key is shown once), revoke."""

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from app import keys
from app.admin.forms import FieldErrors, FormInvalid, parse, problem_errors
from app.admin.session import AdminSession, AdminSessionDep, CheckedFormDep
from app.admin.web import PortalRoute, redirect, render
from app.auth import PREFIX_PATTERN, SCOPES
from app.deps import ServicesDep
from app.problems import KeyNotFound, Problem
from app.schemas import KeyCreate, NewKey

router = APIRouter(prefix="/admin", route_class=PortalRoute, include_in_schema=False)

KEYS_PATH = "/admin/keys"
KeyPrefix = Annotated[str, Path(pattern=PREFIX_PATTERN)]


@router.get("/keys")
async def keys_page(
    request: Request, signed_in: AdminSessionDep, services: ServicesDep, revoked: bool = False
) -> Response:
    return await _keys_page(request, signed_in, services, revoked=revoked)


@router.post("/keys")
async def create_key(
    request: Request, signed_in: AdminSessionDep, services: ServicesDep, form: CheckedFormDep
) -> Response:
    principal = signed_in.principal
    try:
        body = parse(KeyCreate, form, ("scope", "name"))
        async with services.pool.acquire() as conn:
            created = await keys.create(
                conn, principal.tenant_id, body.scope, body.name, actor=principal.actor
            )
    except FormInvalid as invalid:
        errors, status = invalid.errors, 422
    except Problem as problem:
        errors, status = problem_errors(problem), problem.status
    else:
        return await _keys_page(request, signed_in, services, created=created, status=201)
    return await _keys_page(request, signed_in, services, form=form, errors=errors, status=status)


@router.get("/keys/{prefix}/revoke")
async def revoke_form(
    request: Request, prefix: KeyPrefix, signed_in: AdminSessionDep, services: ServicesDep
) -> Response:
    listed = await keys.listing(services.pool, signed_in.principal.tenant_id, include_revoked=True)
    key = next((k for k in listed if k.prefix == prefix), None)
    if key is None:
        raise KeyNotFound(f"No key with prefix {prefix!r}.")
    return render(request, "revoke.html", signed_in=signed_in, key=key)


@router.post("/keys/{prefix}/revoke")
async def revoke_key(
    prefix: KeyPrefix, signed_in: AdminSessionDep, services: ServicesDep, _form: CheckedFormDep
) -> Response:
    principal = signed_in.principal
    async with services.pool.acquire() as conn:
        await keys.revoke(conn, principal.tenant_id, prefix, actor=principal.actor)
    services.auth.forget(prefix)
    return redirect(KEYS_PATH, notice="revoked", subject=prefix)


async def _keys_page(
    request: Request,
    signed_in: AdminSession,
    services: ServicesDep,
    *,
    revoked: bool = False,
    created: NewKey | None = None,
    form: dict[str, str] | None = None,
    errors: FieldErrors | None = None,
    status: int = 200,
) -> Response:
    listed = await keys.listing(
        services.pool, signed_in.principal.tenant_id, include_revoked=revoked
    )
    return render(
        request,
        "keys.html",
        signed_in=signed_in,
        status_code=status,
        keys=listed,
        revoked=revoked,
        created=created,
        scopes=SCOPES,
        values=form or {"scope": "issue", "name": ""},
        errors=errors or {},
    )
