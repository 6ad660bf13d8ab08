"""Dependencies shared by the routes, as ``Annotated`` aliases, and the problems they document.

Every route behind an API key declares its problems with :func:`key_problems` or
:func:`admin_problems`, so the OpenAPI document lists exactly what the route can answer.
"""

from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.convertors import Convertor, register_url_convertor

from app.auth import Principal
from app.errors import (
    BadRequest,
    Forbidden,
    InvalidRequest,
    Overloaded,
    PayloadTooLarge,
    Problem,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    problem_responses,
)
from app.formatting import MAX_NUMBER_LENGTH
from app.schemas import LINE_PATTERN, SERIES_NAME_PATTERN
from app.services import Services

bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="dn_<prefix>_<secret>",
    description="An API key: `Authorization: Bearer dn_<prefix>_<secret>`.",
)

# What a request with a JSON body can get wrong before any route code runs.
JSON_BODY_PROBLEMS: tuple[type[Problem], ...] = (
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)


def key_problems(*kinds: type[Problem]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a route any key of the tenant may call, plus ``kinds``."""
    return problem_responses(Unauthorized, InvalidRequest, Unavailable, Overloaded, *kinds)


def admin_problems(*kinds: type[Problem]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a route that needs an admin key, plus ``kinds``."""
    return key_problems(Forbidden, *kinds)


SeriesNameParam = Annotated[
    str, Path(pattern=SERIES_NAME_PATTERN, description="The series' name.", examples=["invoice"])
]


class NumberConvertor(Convertor[str]):
    """A formatted number in a route's path, written ``{number:number}``: any characters, ``/``
    included.

    The server decodes the path before routing, so ``INV%2F2026%2F0001`` arrives as
    ``INV/2026/0001`` and a one-segment parameter could not match it. A number is never empty,
    so ``/series/{name}/numbers/`` still reaches the ledger listing (by the trailing-slash
    redirect) instead of a lookup of nothing. A route whose path goes on after the number (the
    literal ``/void``) matches greedily: ``…/numbers/A/void/void`` voids ``A/void``.
    """

    regex = ".+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("number", NumberConvertor())

NumberParam = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_NUMBER_LENGTH,
        pattern=LINE_PATTERN,
        description="A formatted number, percent-encoded (`INV%2F2026%2F0001`); a `/` may also "
        "be sent as it is (`INV/2026/0001`).",
        examples=["INV-2026-000123"],
    ),
]


async def get_services(request: Request) -> Services:  # async: no thread hop per request
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_pool(services: ServicesDep) -> asyncpg.Pool:
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
