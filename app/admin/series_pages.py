"""The series list, and creating, changing and archiving a series.

Forms go through the API's models and app/series.py, so the rules, the errors and the audit rows
are those of POST, PATCH and DELETE /series.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app import series as series_sql
from app.admin import overview
from app.admin.forms import FieldErrors, FormInvalid, parse, problem_errors, values
from app.admin.session import AdminSession, AdminSessionDep, CheckedFormDep
from app.admin.web import PortalRoute, redirect, render
from app.definition import Series
from app.deps import ServicesDep
from app.problems import FormatConflict, Problem, SeriesExists
from app.rules import PROFILES
from app.schemas import SeriesCreate, SeriesUpdate
from app.series import STRUCTURAL_FIELDS

router = APIRouter(prefix="/admin", route_class=PortalRoute, include_in_schema=False)

PAGE_SIZE = 50
# Series names start with a letter or digit, so this path can never be a series' own.
NEW_SERIES_PATH = "/admin/series/_new"
EDIT_FIELDS = (
    "format",
    "mode",
    "reset",
    "start",
    "step",
    "max_value",
    "timezone",
    "fiscal_year_start",
    "block_size",
    "ledger",
    "description",
    "shared_counter",
    "date_order",
    "closed_through",
    "number_profile",
    "max_length",
    "allowed_characters",
    "warn_remaining",
)
CREATE_FIELDS = ("name", *EDIT_FIELDS)
# With a new format: the first document date it applies to; with closed_through moved back: why.
UPDATE_FIELDS = (*EDIT_FIELDS, "effective_from", "reopen_reason")
# Refusals shown beside a field rather than over the whole form.
CREATE_CONFLICTS: dict[type[Problem], str] = {SeriesExists: "name"}
EDIT_CONFLICTS: dict[type[Problem], str] = {FormatConflict: "format"}
# The number_profile options, after "none".
PROFILE_CHOICES = [
    (name, f"{name}: at most {profile.max_length} characters") for name, profile in PROFILES.items()
]
CREATE_DEFAULTS: dict[str, Any] = {
    name: field.default
    for name, field in SeriesCreate.model_fields.items()
    if name in CREATE_FIELDS and name != "name"
}


def series_path(name: str) -> str:
    return f"/admin/series/{name}"


@router.get("/series")
async def series_list(
    request: Request,
    signed_in: AdminSessionDep,
    services: ServicesDep,
    cursor: Annotated[str, Query(max_length=63)] = "",
    archived: bool = False,
) -> Response:
    found = await series_sql.page(
        services.pool,
        signed_in.principal.tenant_id,
        after=cursor,
        limit=PAGE_SIZE + 1,
        include_archived=archived,
    )
    shown = found[:PAGE_SIZE]
    return render(
        request,
        "series_list.html",
        signed_in=signed_in,
        summaries=await overview.summaries(services.pool, shown, services.issuer.clock()),
        archived=archived,
        next_cursor=shown[-1].name if len(found) > PAGE_SIZE else None,
        recent_limit=overview.RECENT_LIMIT,
    )


@router.get("/series/_new")
async def new_series_form(request: Request, signed_in: AdminSessionDep) -> Response:
    return _form(request, signed_in, None, values({}, CREATE_DEFAULTS), {})


@router.post("/series/_new")
async def create_series(
    request: Request, signed_in: AdminSessionDep, services: ServicesDep, form: CheckedFormDep
) -> Response:
    principal = signed_in.principal
    try:
        body = parse(SeriesCreate, form, CREATE_FIELDS)
        async with services.pool.acquire() as conn:
            created = await series_sql.create(
                conn, principal.tenant_id, body, actor=principal.actor
            )
    except FormInvalid as invalid:
        errors, status = invalid.errors, 422
    except Problem as problem:
        errors, status = problem_errors(problem, beside=CREATE_CONFLICTS), problem.status
    else:
        return redirect(series_path(created.name), notice="created")
    return _form(request, signed_in, None, values(form, CREATE_DEFAULTS), errors, status=status)


@router.get("/series/{name}/edit")
async def edit_series_form(
    request: Request, name: str, signed_in: AdminSessionDep, services: ServicesDep
) -> Response:
    found = await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    shown = values({}, found.fields())
    return await _edit_form(request, signed_in, services, found, shown, {})


@router.post("/series/{name}/edit")
async def edit_series(
    request: Request,
    name: str,
    signed_in: AdminSessionDep,
    services: ServicesDep,
    form: CheckedFormDep,
) -> Response:
    principal = signed_in.principal
    found = await series_sql.fetch(services.pool, principal.tenant_id, name)
    try:
        patch = parse(SeriesUpdate, form, UPDATE_FIELDS)
        async with services.pool.acquire() as conn:
            await series_sql.update(conn, principal.tenant_id, name, patch, actor=principal.actor)
    except FormInvalid as invalid:
        errors, status = invalid.errors, 422
    except Problem as problem:
        errors, status = problem_errors(problem, beside=EDIT_CONFLICTS), problem.status
    else:
        services.catalog.forget(principal.tenant_id, name)
        return redirect(series_path(name), notice="changed")
    shown = values(form, found.fields())
    return await _edit_form(request, signed_in, services, found, shown, errors, status=status)


@router.get("/series/{name}/archive")
async def archive_form(
    request: Request, name: str, signed_in: AdminSessionDep, services: ServicesDep
) -> Response:
    found = await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    return render(request, "archive.html", signed_in=signed_in, series=found)


@router.post("/series/{name}/archive")
async def archive_series(
    name: str, signed_in: AdminSessionDep, services: ServicesDep, _form: CheckedFormDep
) -> Response:
    principal = signed_in.principal
    async with services.pool.acquire() as conn:
        await series_sql.archive(conn, principal.tenant_id, name, actor=principal.actor)
    services.catalog.forget(principal.tenant_id, name)
    return redirect(series_path(name), notice="archived")


async def _edit_form(
    request: Request,
    signed_in: AdminSession,
    services: ServicesDep,
    found: Series,
    shown: dict[str, str],
    errors: FieldErrors,
    *,
    status: int = 200,
) -> Response:
    """Fields that numbers already depend on are shown but cannot be changed."""
    in_use = bool(await series_sql.counters(services.pool, found))
    locked = STRUCTURAL_FIELDS if in_use else ()
    return _form(request, signed_in, found, shown, errors, locked=locked, status=status)


def _form(
    request: Request,
    signed_in: AdminSession,
    editing: Series | None,
    shown: dict[str, str],
    errors: FieldErrors,
    *,
    locked: tuple[str, ...] = (),
    status: int = 200,
) -> Response:
    return render(
        request,
        "series_form.html",
        signed_in=signed_in,
        status_code=status,
        editing=editing,
        values=shown,
        errors=errors,
        locked=locked,
        action=series_path(editing.name) + "/edit" if editing else NEW_SERIES_PATH,
        profiles=PROFILE_CHOICES,
    )
