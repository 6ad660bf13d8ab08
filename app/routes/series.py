"""Series administration: create, read, change and archive series."""

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app import series as series_sql
from app.definition import Series
from app.deps import (
    JSON_BODY_PROBLEMS,
    AdminDep,
    PoolDep,
    PrincipalDep,
    SeriesNameParam,
    ServicesDep,
    admin_problems,
    key_problems,
)
from app.errors import FormatConflict, SeriesExists, SeriesInUse, SeriesNotFound
from app.schemas import SERIES_CURSOR_PATTERN, SeriesCreate, SeriesOut, SeriesPage, SeriesUpdate

router = APIRouter(prefix="/series", tags=["series"])


@router.post(
    "",
    status_code=201,
    summary="Create a series",
    responses=admin_problems(*JSON_BODY_PROBLEMS, SeriesExists),
)
async def create_series(body: SeriesCreate, admin: AdminDep, pool: PoolDep) -> SeriesOut:
    async with pool.acquire() as conn:
        created = await series_sql.create(conn, admin.tenant_id, body, actor=admin.actor)
    return created.to_out(counters=[])


@router.get("", summary="List series, by name", responses=key_problems())
async def list_series(
    principal: PrincipalDep,
    pool: PoolDep,
    cursor: Annotated[
        str, Query(pattern=SERIES_CURSOR_PATTERN, description="next_cursor of the last page")
    ] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    archived: Annotated[bool, Query(description="Include archived series")] = False,
) -> SeriesPage:
    found = await series_sql.page(
        pool, principal.tenant_id, after=cursor, limit=limit + 1, include_archived=archived
    )
    items = [s.to_out() for s in found[:limit]]
    return SeriesPage(items=items, next_cursor=items[-1].name if len(found) > limit else None)


@router.get(
    "/{name}",
    summary="Read a series, its format history and the last value of each counter",
    responses=key_problems(SeriesNotFound),
)
async def read_series(name: SeriesNameParam, principal: PrincipalDep, pool: PoolDep) -> SeriesOut:
    found = await series_sql.fetch(pool, principal.tenant_id, name)
    return found.to_out(counters=await series_sql.counters(pool, found))


@router.patch(
    "/{name}",
    summary="Change a series",
    responses=admin_problems(*JSON_BODY_PROBLEMS, SeriesNotFound, SeriesInUse, FormatConflict),
)
async def update_series(
    name: SeriesNameParam, body: SeriesUpdate, admin: AdminDep, services: ServicesDep
) -> SeriesOut:
    async with services.pool.acquire() as conn:
        changed: Series = await series_sql.update(
            conn, admin.tenant_id, name, body, actor=admin.actor
        )
    services.catalog.forget(admin.tenant_id, name)
    return changed.to_out(counters=await series_sql.counters(services.pool, changed))


@router.delete(
    "/{name}",
    status_code=204,
    summary="Archive a series: it issues no more numbers",
    responses=admin_problems(SeriesNotFound),
)
async def archive_series(name: SeriesNameParam, admin: AdminDep, services: ServicesDep) -> Response:
    async with services.pool.acquire() as conn:
        await series_sql.archive(conn, admin.tenant_id, name, actor=admin.actor)
    services.catalog.forget(admin.tenant_id, name)
    return Response(status_code=204)
