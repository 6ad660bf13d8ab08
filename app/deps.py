"""Dependencies shared by the routes, as ``Annotated`` aliases, and the problems they document.

Every route behind an API key declares its problems with :func:`key_problems` or
:func:`admin_problems`, so the OpenAPI document lists exactly what the route can answer.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Header, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.convertors import Convertor, register_url_convertor

from app import idempotency
from app.auth import Principal
from app.cursors import CURSOR_MAX_LENGTH, CURSOR_PATTERN
from app.database import Connection
from app.formatting import MAX_NUMBER_LENGTH
from app.http_errors import problem_responses
from app.idempotency import KEY_DESCRIPTION, KEY_PATTERN, REPLAYED_HEADER
from app.problems import (
    BadRequest,
    Forbidden,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidRequest,
    Overloaded,
    PayloadTooLarge,
    Problem,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
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
    return problem_responses(
        Unauthorized, InvalidRequest, RateLimited, Unavailable, Overloaded, *kinds
    )


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
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.")
    return await services.authenticate(credentials.credentials, request.scope)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_admin(principal: PrincipalDep) -> Principal:
    principal.require("admin")
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]


IdempotencyKeyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", pattern=KEY_PATTERN, description=KEY_DESCRIPTION)
]
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=CURSOR_MAX_LENGTH,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the previous page; left out for the first page.",
    ),
]

# The headers successful answers carry, by name, as the OpenAPI document describes them.
SUCCESS_HEADERS: Mapping[str, str] = {
    "Location": "The URL of what was created.",
    "ETag": 'The version of the series\' definition (`"v7"`); send it as `If-Match` to change '
    "the series only if nobody changed it since. Absent from a replayed answer.",
    "Link": 'The next page, as `<url>; rel="next"`; absent on the last page.',
    "Vary": "`Accept`: the representation depends on the Accept header.",
    REPLAYED_HEADER: "`true` when this is the stored answer to an earlier request with the same "
    "Idempotency-Key; nothing was done again.",
}


def success_headers(status: int, *names: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entry documenting the headers a successful answer may carry."""
    return {
        status: {
            "headers": {
                name: {"description": SUCCESS_HEADERS[name], "schema": {"type": "string"}}
                for name in names
            }
        }
    }


# What a request with an Idempotency-Key can get wrong with its key.
IDEMPOTENCY_PROBLEMS: tuple[type[Problem], ...] = (IdempotencyKeyInFlight, IdempotencyKeyReused)


async def once_per_key(
    services: Services,
    scope: idempotency.Scope,
    header: str | None,
    operation: str,
    request: Mapping[str, Any],
    change: Callable[[Connection], Awaitable[tuple[int, bytes]]],
) -> tuple[int, bytes, bool]:
    """Make a change on a connection of its own, once per Idempotency-Key (if one was sent):
    (status, body, replayed). See ``app.idempotency.answer_once``."""
    claim = idempotency.claim_of(header, operation, request)
    ttl = services.settings.idempotency_ttl_seconds
    async with services.pool.acquire() as conn:
        return await idempotency.answer_once(conn, scope, claim, ttl, lambda: change(conn))


def json_answer(
    status: int, body: bytes, *, replayed: bool = False, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON body already rendered (and stored, for idempotent replays), sent as it is."""
    sent = dict(headers or {})
    if replayed:
        sent[REPLAYED_HEADER] = "true"
    return Response(body, status, sent, media_type="application/json")


def link_next(request: Request, response: Response, next_cursor: str | None) -> None:
    """Add the ``Link: <...>; rel="next"`` header of a page that has a next one: this request's
    path and query with ``cursor`` set to the page's ``next_cursor``."""
    if next_cursor is not None:
        query = request.url.include_query_params(cursor=next_cursor).query
        response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
