"""API keys of the caller's tenant, for admin keys."""

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from app import keys
from app.auth import PREFIX_PATTERN
from app.database import Connection
from app.deps import (
    IDEMPOTENCY_PROBLEMS,
    JSON_BODY_PROBLEMS,
    AdminDep,
    CursorQuery,
    IdempotencyKeyHeader,
    ServicesDep,
    admin_problems,
    json_answer,
    link_next,
    once_per_key,
    success_headers,
)
from app.idempotency import REPLAYED_HEADER, TenantScope
from app.problems import KeyNotFound
from app.schemas import KeyCreate, KeyOut, KeyPage, NewKey

router = APIRouter(prefix="/keys", tags=["keys"])

KeyPrefix = Annotated[str, Path(pattern=PREFIX_PATTERN, description="The key's prefix, as listed.")]


@router.get(
    "",
    summary="List the tenant's keys, oldest first (prefix and metadata, never the secret)",
    responses={**success_headers(200, "Link"), **admin_problems()},
)
async def list_keys(
    admin: AdminDep,
    services: ServicesDep,
    request: Request,
    response: Response,
    revoked: Annotated[bool, Query(description="Include revoked keys")] = False,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> KeyPage:
    found = await keys.page(
        services.pool, admin.tenant_id, include_revoked=revoked, cursor=cursor, limit=limit
    )
    link_next(request, response, found.next_cursor)
    return found


@router.post(
    "",
    status_code=201,
    summary="Create a key; the key is shown only in this answer (and in its replays)",
    description="With an `Idempotency-Key`, the answer, key included, is kept for replays "
    "for `DOCNUM_IDEMPOTENCY_TTL_SECONDS`.",
    response_model=NewKey,
    responses={
        **success_headers(201, "Location", REPLAYED_HEADER),
        **admin_problems(*JSON_BODY_PROBLEMS, *IDEMPOTENCY_PROBLEMS),
    },
)
async def create_key(
    body: KeyCreate,
    admin: AdminDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    async def create(conn: Connection) -> tuple[int, bytes]:
        made = await keys.create(conn, admin.tenant_id, body.scope, body.name, actor=admin.actor)
        return 201, made.model_dump_json().encode()

    status, content, replayed = await once_per_key(
        services,
        TenantScope(admin.tenant_id),
        idempotency_key,
        "createKey",
        body.model_dump(mode="json"),
        create,
    )
    location = f"/keys/{json.loads(content)['prefix']}"
    return json_answer(status, content, replayed=replayed, headers={"Location": location})


@router.delete(
    "/{prefix}",
    summary="Revoke a key; it stops working at once here and within seconds everywhere",
    responses=admin_problems(KeyNotFound),
)
async def revoke_key(prefix: KeyPrefix, admin: AdminDep, services: ServicesDep) -> KeyOut:
    async with services.pool.acquire() as conn:
        revoked = await keys.revoke(conn, admin.tenant_id, prefix, actor=admin.actor)
    services.auth.forget(prefix)
    return revoked
