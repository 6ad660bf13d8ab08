"""API keys of the caller's tenant, for admin keys."""

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field

from app import keys
from app.auth import Scope
from app.deps import AdminDep, ServicesDep
from app.keys import KeyOut, NewKey
from app.schemas import StrictModel

router = APIRouter(prefix="/keys", tags=["keys"])


class KeyCreate(StrictModel):
    scope: Scope = "issue"
    name: str = Field(default="", max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")


@router.get("", summary="List the tenant's keys (prefix and metadata, never the secret)")
async def list_keys(
    admin: AdminDep,
    services: ServicesDep,
    revoked: Annotated[bool, Query(description="Include revoked keys")] = False,
) -> list[KeyOut]:
    return await keys.listing(services.pool, admin.tenant_id, include_revoked=revoked)


@router.post("", status_code=201, summary="Create a key; the key is shown only in this answer")
async def create_key(body: KeyCreate, admin: AdminDep, services: ServicesDep) -> NewKey:
    async with services.pool.acquire() as conn:
        return await keys.create(conn, admin.tenant_id, body.scope, body.name, actor=admin.actor)


@router.delete("/{prefix}", summary="Revoke a key")
async def revoke_key(prefix: str, admin: AdminDep, services: ServicesDep) -> KeyOut:
    async with services.pool.acquire() as conn:
        revoked = await keys.revoke(conn, admin.tenant_id, prefix, actor=admin.actor)
    services.auth.forget(prefix)
    return revoked
