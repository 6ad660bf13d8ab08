"""A series' page: its periods, its ledger, the gap report; voiding a number; the CSV download."""

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app import exports, ledger
from app import series as series_sql
from app.admin.forms import FormInvalid, parse, problem_errors
from app.admin.series_pages import series_path
from app.admin.session import AdminSession, AdminSessionDep, CheckedFormDep
from app.admin.web import PortalRoute, redirect, render
from app.definition import CounterKey, Series
from app.deps import ServicesDep
from app.errors import LedgerDisabled, Problem
from app.schemas import PERIOD_PATTERN, GapReport, LedgerEntry, VoidRequest

router = APIRouter(prefix="/admin", route_class=PortalRoute, include_in_schema=False)

PAGE_SIZE = 50
GAP_RUNS_SHOWN = 100
STATUSES = ("issued", "voided")

# Empty means "any": that is what a filter form sends for its first choice.
PeriodFilter = Annotated[str, Query(max_length=16)]
StatusFilter = Annotated[str, Query(max_length=10)]
NumberQuery = Annotated[str, Query(min_length=1, max_length=64)]


def _filters(period: str, status: str) -> tuple[str | None, str | None]:
    """The period and status to filter on; anything not a period or status filters nothing."""
    chosen_period = period if re.fullmatch(PERIOD_PATTERN, period) else None
    return chosen_period, status if status in STATUSES else None


@router.get("/series/{name}")
async def series_page(
    request: Request,
    name: str,
    signed_in: AdminSessionDep,
    services: ServicesDep,
    period: PeriodFilter = "",
    status: StatusFilter = "",
    cursor: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    pool = services.pool
    found = await series_sql.fetch(pool, signed_in.principal.tenant_id, name)
    chosen_period, chosen_status = _filters(period, status)
    current = services.issuer.current_period(found)
    entries: list[LedgerEntry] = []
    next_cursor: str | None = None
    gaps: GapReport | None = None
    if found.ledger:
        entries, next_cursor = await ledger.page(
            pool,
            found,
            period=chosen_period,
            variables=None,
            status=chosen_status,
            cursor=cursor,
            limit=PAGE_SIZE,
        )
        gaps = await ledger.gaps(pool, found, CounterKey(chosen_period or current, ""))
    return render(
        request,
        "series.html",
        signed_in=signed_in,
        series=found,
        periods=await series_sql.counters(pool, found),
        current_period=current,
        period=chosen_period or "",
        status=chosen_status or "",
        entries=entries,
        cursor=cursor,
        next_cursor=next_cursor,
        gaps=gaps,
        gap_runs_shown=GAP_RUNS_SHOWN,
    )


@router.get("/series/{name}/ledger.csv")
async def ledger_csv(
    name: str,
    signed_in: AdminSessionDep,
    services: ServicesDep,
    period: PeriodFilter = "",
    status: StatusFilter = "",
) -> Response:
    found = await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    if not found.ledger:
        raise LedgerDisabled(f"Series {name!r} does not record its numbers (ledger is off).")
    chosen_period, chosen_status = _filters(period, status)
    filename = f"{name}-{chosen_period or 'all'}-ledger.csv"
    return await exports.csv_response(
        services.pool,
        services.exports,
        found,
        period=chosen_period,
        variables=None,
        status=chosen_status,
        filename=filename,
    )


@router.get("/series/{name}/void")
async def void_form(
    request: Request,
    name: str,
    signed_in: AdminSessionDep,
    services: ServicesDep,
    number: NumberQuery,
) -> Response:
    """The confirmation page, offered only for a number of the ledger (looked up as
    ``GET /series/{name}/numbers/{number}`` does); the number travels in the query and the form,
    so any character it holds, ``/`` included, reaches the void unchanged."""
    found = await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    entry = await ledger.lookup(services.pool, found, number)
    return _void_form(request, signed_in, found, entry.number, "", {})


@router.post("/series/{name}/void")
async def void_number(
    request: Request,
    name: str,
    signed_in: AdminSessionDep,
    services: ServicesDep,
    form: CheckedFormDep,
) -> Response:
    principal = signed_in.principal
    found = await series_sql.fetch(services.pool, principal.tenant_id, name)
    number = form.get("number", "")
    try:
        body = parse(VoidRequest, form, ("reason",))
        async with services.pool.acquire() as conn:
            await ledger.void(conn, found, number, body.reason, actor=principal.actor)
    except FormInvalid as invalid:
        errors, status = invalid.errors, 422
    except Problem as problem:
        errors, status = problem_errors(problem), problem.status
    else:
        return redirect(series_path(name), notice="voided", subject=number)
    reason = form.get("reason", "")
    return _void_form(request, signed_in, found, number, reason, errors, status=status)


def _void_form(
    request: Request,
    signed_in: AdminSession,
    found: Series,
    number: str,
    reason: str,
    errors: dict[str, str],
    *,
    status: int = 200,
) -> Response:
    return render(
        request,
        "void.html",
        signed_in=signed_in,
        status_code=status,
        series=found,
        number=number,
        reason=reason,
        errors=errors,
    )
