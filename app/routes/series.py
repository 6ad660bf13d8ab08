"""Series administration: create, read, change, archive and restore series.

Answers that carry a series send its ``ETag`` (the version of its definition); ``PATCH`` with
``If-Match`` changes the series only if it is still at that version, checked under the series
row's lock (``app.series.update``). With ``DOCNUM_REQUIRE_IF_MATCH`` on, a ``PATCH`` without
``If-Match`` is a 428.
"""

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from app import cursors
from app import series as series_sql
from app.database import Connection
from app.definition import Series
from app.deps import (
    IDEMPOTENCY_PROBLEMS,
    JSON_BODY_PROBLEMS,
    AdminDep,
    CursorQuery,
    IdempotencyKeyHeader,
    PoolDep,
    PrincipalDep,
    SeriesNameParam,
    ServicesDep,
    admin_problems,
    json_answer,
    key_problems,
    link_next,
    once_per_key,
    success_headers,
)
from app.idempotency import REPLAYED_HEADER, TenantScope
from app.problems import (
    FormatConflict,
    PreconditionFailed,
    PreconditionRequired,
    SeriesExists,
    SeriesInUse,
    SeriesNotFound,
)
from app.schemas import SERIES_NAME_PATTERN, SeriesCreate, SeriesOut, SeriesPage, SeriesUpdate

router = APIRouter(prefix="/series", tags=["series"])

IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=1000,
        description="The `ETag` the change was made from; a series changed since is a 412.",
    ),
]


def _location(name: str) -> str:
    return f"/series/{name}"


@router.post(
    "",
    status_code=201,
    summary="Create a series",
    response_model=SeriesOut,
    responses={
        **success_headers(201, "Location", "ETag", REPLAYED_HEADER),
        **admin_problems(*JSON_BODY_PROBLEMS, *IDEMPOTENCY_PROBLEMS, SeriesExists),
    },
)
async def create_series(
    body: SeriesCreate,
    admin: AdminDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    headers = {"Location": _location(body.name)}

    async def create(conn: Connection) -> tuple[int, bytes]:
        created = await series_sql.create(conn, admin.tenant_id, body, actor=admin.actor)
        headers["ETag"] = series_sql.etag(created)
        return 201, created.to_out(counters=[]).model_dump_json().encode()

    status, content, replayed = await once_per_key(
        services,
        TenantScope(admin.tenant_id),
        idempotency_key,
        "createSeries",
        body.model_dump(mode="json"),
        create,
    )
    return json_answer(status, content, replayed=replayed, headers=headers)


def _valid_name(position: cursors.Position) -> bool:
    return cursors.matches(SERIES_NAME_PATTERN, position[0])


@router.get(
    "",
    summary="List series, by name",
    responses={**success_headers(200, "Link"), **key_problems()},
)
async def list_series(
    principal: PrincipalDep,
    pool: PoolDep,
    request: Request,
    response: Response,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    archived: Annotated[bool, Query(description="Include archived series")] = False,
) -> SeriesPage:
    position = cursors.decode("series", cursor, (str,), _valid_name)
    after = "" if position is None else str(position[0])
    found = await series_sql.page(
        pool, principal.tenant_id, after=after, limit=limit + 1, include_archived=archived
    )
    items = [s.to_out() for s in found[:limit]]
    more = len(found) > limit
    next_cursor = cursors.encode("series", (items[-1].name,)) if more else None
    link_next(request, response, next_cursor)
    return SeriesPage(items=items, next_cursor=next_cursor, has_more=more)


async def _with_counters(pool: PoolDep, found: Series, response: Response) -> SeriesOut:
    response.headers["ETag"] = series_sql.etag(found)
    return found.to_out(counters=await series_sql.counters(pool, found))


@router.get(
    "/{name}",
    summary="Read a series, its format history and the last value of each counter",
    responses={**success_headers(200, "ETag"), **key_problems(SeriesNotFound)},
)
async def get_series(
    name: SeriesNameParam, principal: PrincipalDep, pool: PoolDep, response: Response
) -> SeriesOut:
    found = await series_sql.fetch(pool, principal.tenant_id, name)
    return await _with_counters(pool, found, response)


@router.patch(
    "/{name}",
    summary="Change a series",
    description="Send the `ETag` of the series as `If-Match` to change it only if nobody "
    "changed it since you read it (412 otherwise); a service run with "
    "`DOCNUM_REQUIRE_IF_MATCH` requires it (428 without it).",
    responses={
        **success_headers(200, "ETag"),
        **admin_problems(
            *JSON_BODY_PROBLEMS,
            SeriesNotFound,
            SeriesInUse,
            FormatConflict,
            PreconditionFailed,
            PreconditionRequired,
        ),
    },
)
async def update_series(
    name: SeriesNameParam,
    body: SeriesUpdate,
    admin: AdminDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatch = None,
) -> SeriesOut:
    if if_match is None and services.settings.require_if_match:
        raise PreconditionRequired(
            "Send the series' ETag as If-Match: this service requires conditional changes."
        )
    async with services.pool.acquire() as conn:
        changed = await series_sql.update(
            conn, admin.tenant_id, name, body, actor=admin.actor, if_match=if_match
        )
    services.catalog.forget(admin.tenant_id, name)
    return await _with_counters(services.pool, changed, response)


@router.delete(
    "/{name}",
    status_code=204,
    summary="Archive a series: it issues no more numbers (restore undoes it)",
    responses=admin_problems(SeriesNotFound),
)
async def archive_series(name: SeriesNameParam, admin: AdminDep, services: ServicesDep) -> Response:
    async with services.pool.acquire() as conn:
        await series_sql.archive(conn, admin.tenant_id, name, actor=admin.actor)
    services.catalog.forget(admin.tenant_id, name)
    return Response(status_code=204)


@router.post(
    "/{name}/restore",
    summary="Restore an archived series: it issues numbers again, where it stopped",
    responses={**success_headers(200, "ETag"), **admin_problems(SeriesNotFound)},
)
async def restore_series(
    name: SeriesNameParam, admin: AdminDep, services: ServicesDep, response: Response
) -> SeriesOut:
    async with services.pool.acquire() as conn:
        restored = await series_sql.restore(conn, admin.tenant_id, name, actor=admin.actor)
    services.catalog.forget(admin.tenant_id, name)
    return await _with_counters(services.pool, restored, response)
