"""Tenants with their keys, and series made through the API."""

import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from app import keys


@dataclass(frozen=True)
class Tenant:
    name: str
    id: int
    admin_key: str
    issue_key: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    @property
    def issuer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issue_key}"}


async def create_series(
    client: httpx.AsyncClient, tenant: Tenant, name: str, **fields: Any
) -> dict[str, Any]:
    body = {"name": name, "format": fields.pop("format", "T-{seq}"), **fields}
    response = await client.post("/series", json=body, headers=tenant.admin)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def make_tenant(pool: asyncpg.Pool) -> Tenant:
    name = f"t-{secrets.token_hex(4)}"
    async with pool.acquire() as conn:
        tenant_id = await keys.ensure_tenant(conn, name)
        admin = await keys.create(conn, tenant_id, "admin", "test admin", actor="tests")
        issuer = await keys.create(conn, tenant_id, "issue", "test issuer", actor="tests")
    return Tenant(name=name, id=tenant_id, admin_key=admin.key, issue_key=issuer.key)
