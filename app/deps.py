"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import Principal
from app.errors import Unauthorized
from app.services import Services

bearer = HTTPBearer(auto_error=False, description="An API key: `dn_<prefix>_<secret>`.")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_pool(services: ServicesDep) -> asyncpg.Pool:
    return services.pool


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]


async def get_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.")
    return await services.auth.verify(credentials.credentials)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_admin(principal: PrincipalDep) -> Principal:
    principal.require("admin")
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]
