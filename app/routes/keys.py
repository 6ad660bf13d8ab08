"""API keys of the caller's tenant, for admin keys."""

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import ConfigDict

from app import keys
from app.auth import PREFIX_PATTERN, Scope
from app.deps import JSON_BODY_PROBLEMS, AdminDep, ServicesDep, admin_problems
from app.errors import KeyNotFound
from app.keys import KeyName, KeyOut, NewKey
from app.schemas import StrictModel

router = APIRouter(prefix="/keys", tags=["keys"])

KeyPrefix = Annotated[str, Path(pattern=PREFIX_PATTERN, description="The key's prefix, as listed.")]


class KeyCreate(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"scope": "issue", "name": "billing service"}]}
    )

    scope: Scope = "issue"
    name: KeyName = ""


@router.get(
    "",
    summary="List the tenant's keys (prefix and metadata, never the secret)",
    responses=admin_problems(),
)
async def list_keys(
    admin: AdminDep,
    services: ServicesDep,
    revoked: Annotated[bool, Query(description="Include revoked keys")] = False,
) -> list[KeyOut]:
    return await keys.listing(services.pool, admin.tenant_id, include_revoked=revoked)


@router.post(
    "",
    status_code=201,
    summary="Create a key; the key is shown only in this answer",
    responses=admin_problems(*JSON_BODY_PROBLEMS),
)
async def create_key(body: KeyCreate, admin: AdminDep, services: ServicesDep) -> NewKey:
    async with services.pool.acquire() as conn:
        return await keys.create(conn, admin.tenant_id, body.scope, body.name, actor=admin.actor)


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
