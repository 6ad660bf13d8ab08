"""Numbering by hand in the portal: setting a counter (go-live), recording a number issued
elsewhere, and importing such numbers from a CSV with a report per row.

Each form runs the API's own code (``app.issuing.manual``) with the signed-in key as the actor,
so a change is checked, locked and audited exactly as ``PUT …/counters/{period}`` and
``POST …/numbers`` do it. An import records each row in a transaction of its own: a row that is
refused (a number that does not read as one of the series, or one already recorded) is reported
and changes nothing, and the rows after it are still recorded.
"""

import csv
import datetime
import io
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from app import series as series_sql
from app.admin.forms import FieldErrors, FormInvalid, parse, problem_errors, validation_errors
from app.admin.series_pages import series_path
from app.admin.session import AdminSession, AdminSessionDep, CheckedFormDep
from app.admin.web import PortalRoute, redirect, render
from app.database import Connection
from app.definition import Series
from app.deps import ServicesDep
from app.issuing import manual
from app.problems import Problem, field_error
from app.schemas import (
    COUNTER_VARIABLES_PATTERN,
    PERIOD_PATTERN,
    CounterSet,
    ExternalNumber,
    LedgerEntry,
    decode_variables,
)
from app.services import Services

router = APIRouter(prefix="/admin", route_class=PortalRoute, include_in_schema=False)

# The rows one import may hold; a larger file is imported in parts.
MAX_IMPORT_ROWS = 1000
# What the import form accepts (about 100 bytes a row).
MAX_IMPORT_CHARACTERS = 200_000
IMPORT_COLUMNS = ("number", "date", "document_ref")

T = TypeVar("T")


def _form(
    template: str,
    request: Request,
    signed_in: AdminSession,
    found: Series,
    values: dict[str, str],
    errors: FieldErrors,
    *,
    status: int = 200,
) -> Response:
    """The form of ``template`` for ``found``, with the values sent and what was wrong with them."""
    return render(
        request,
        template,
        signed_in=signed_in,
        status_code=status,
        series=found,
        values=values,
        errors=errors,
    )


# Setting a counter


@router.get("/series/{name}/counter")
async def counter_form(
    request: Request, name: str, signed_in: AdminSessionDep, services: ServicesDep
) -> Response:
    found = await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    period = found.current_period(services.issuer.clock())
    return _form("counter.html", request, signed_in, found, {"period": period}, {})


@router.post("/series/{name}/counter")
async def set_counter(
    request: Request,
    name: str,
    signed_in: AdminSessionDep,
    services: ServicesDep,
    form: CheckedFormDep,
) -> Response:
    principal = signed_in.principal
    found = await series_sql.fetch(services.pool, principal.tenant_id, name)
    try:
        period = form.get("period", "").strip()
        variables = form.get("variables", "").strip()
        _check_counter_name(period, variables)
        body = parse(CounterSet, form, ("last_value", "reason", "date"))
        changed = await _on_current(
            services,
            found,
            lambda series, conn: manual.set_counter(
                conn,
                services.issuer,
                series,
                period=period,
                day=body.date,
                variables=decode_variables(variables),
                last_value=body.last_value,
                reason=body.reason,
                actor=principal.actor,
                max_counters=services.settings.max_counters_per_series,
            ),
        )
    except FormInvalid as invalid:
        errors, status = invalid.errors, 422
    except Problem as problem:
        errors, status = problem_errors(problem), problem.status
    else:
        subject = f"{changed.period} to {changed.last_value}"
        return redirect(series_path(name), notice="counter-set", subject=subject)
    return _form("counter.html", request, signed_in, found, form, errors, status=status)


def _check_counter_name(period: str, variables: str) -> None:
    if not re.fullmatch(PERIOD_PATTERN, period):
        raise field_error("period", "a period such as 2026, 2026-03, 2026-03-31 or all")
    if not re.fullmatch(COUNTER_VARIABLES_PATTERN, variables):
        raise field_error("variables", "name=value pairs joined by ',', such as branch=BR07")


# Recording one number


@router.get("/series/{name}/record")
async def record_form(
    request: Request, name: str, signed_in: AdminSessionDep, services: ServicesDep
) -> Response:
    found = await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    return _form("record.html", request, signed_in, found, {}, {})


@router.post("/series/{name}/record")
async def record_number(
    request: Request,
    name: str,
    signed_in: AdminSessionDep,
    services: ServicesDep,
    form: CheckedFormDep,
) -> Response:
    found = await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    try:
        body = parse(ExternalNumber, form, ("number", "date", "document_ref"))
        await _record(services, signed_in, found, body)
    except FormInvalid as invalid:
        errors, status = invalid.errors, 422
    except Problem as problem:
        errors, status = problem_errors(problem), problem.status
    else:
        return redirect(series_path(name), notice="recorded", subject=body.number)
    return _form("record.html", request, signed_in, found, form, errors, status=status)


# Importing numbers from a CSV


@dataclass(frozen=True, slots=True)
class RowResult:
    """What became of one row of an import: ``line`` counts from the file's first line."""

    line: int
    number: str
    recorded: bool
    message: str


@router.get("/series/{name}/import")
async def import_form(
    request: Request, name: str, signed_in: AdminSessionDep, services: ServicesDep
) -> Response:
    found = await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    return _import_page(request, signed_in, found, "", {}, None)


@router.post("/series/{name}/import")
async def import_numbers(
    request: Request,
    name: str,
    signed_in: AdminSessionDep,
    services: ServicesDep,
    form: CheckedFormDep,
) -> Response:
    found = await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    text = form.get("csv", "")
    try:
        rows = _rows(text)
    except FormInvalid as invalid:
        return _import_page(request, signed_in, found, text, invalid.errors, None, status=422)
    report = [await _import_row(services, signed_in, found, line, row) for line, row in rows]
    return _import_page(request, signed_in, found, "", {}, report)


def _rows(text: str) -> list[tuple[int, dict[str, str]]]:
    """The rows of the CSV by line, with its columns named by the header, or the reason it
    cannot be read at all."""
    if len(text) > MAX_IMPORT_CHARACTERS:
        raise FormInvalid({"csv": f"at most {MAX_IMPORT_CHARACTERS:,} characters at once"})
    reader = csv.reader(io.StringIO(text.strip()))
    try:
        lines = list(reader)
    except csv.Error as error:
        raise FormInvalid({"csv": f"not a CSV file: {error}"}) from None
    if not lines or [c.strip() for c in lines[0]][:1] != ["number"]:
        raise FormInvalid({"csv": "the first line names the columns: number,date,document_ref"})
    header = [c.strip() for c in lines[0]]
    unknown = sorted(set(header) - set(IMPORT_COLUMNS))
    if unknown or "date" not in header:
        raise FormInvalid(
            {
                "csv": "the columns are number, date and (optional) document_ref"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            }
        )
    rows = [(i, dict(zip(header, cells, strict=False))) for i, cells in enumerate(lines[1:], 2)]
    rows = [(i, row) for i, row in rows if any(v.strip() for v in row.values())]
    if len(rows) > MAX_IMPORT_ROWS:
        raise FormInvalid({"csv": f"at most {MAX_IMPORT_ROWS:,} rows at once"})
    return rows


async def _import_row(
    services: Services, signed_in: AdminSession, found: Series, line: int, row: dict[str, str]
) -> RowResult:
    number = row.get("number", "").strip()
    data: dict[str, Any] = {k: v.strip() for k, v in row.items() if v.strip()}
    try:
        body = ExternalNumber.model_validate(data)
        entry = await _record(services, signed_in, found, body)
    except ValidationError as error:
        message = "; ".join(f"{k}: {v}" for k, v in validation_errors(error).items())
        return RowResult(line, number, False, message)
    except Problem as problem:
        return RowResult(line, number, False, problem.detail)
    return RowResult(line, number, True, f"recorded, value {entry.value}")


async def _record(
    services: Services, signed_in: AdminSession, found: Series, body: ExternalNumber
) -> LedgerEntry:
    return await _on_current(
        services,
        found,
        lambda series, conn: manual.record_external(
            conn,
            services.issuer,
            series,
            body,
            actor=signed_in.principal.actor,
            max_counters=services.settings.max_counters_per_series,
        ),
    )


def _import_page(
    request: Request,
    signed_in: AdminSession,
    found: Series,
    text: str,
    errors: FieldErrors,
    report: list[RowResult] | None,
    *,
    status: int = 200,
) -> Response:
    return render(
        request,
        "import.html",
        signed_in=signed_in,
        status_code=status,
        series=found,
        values={"csv": text},
        errors=errors,
        report=report,
        recorded=sum(r.recorded for r in report or []),
        max_rows=MAX_IMPORT_ROWS,
        max_characters=MAX_IMPORT_CHARACTERS,
        example=f"number,date,document_ref\n{_example(found)},{datetime.date.today()},PAPER-17",
    )


def _example(found: Series) -> str:
    try:
        return found.template.render(
            1,
            date=datetime.date.today(),
            series=found.name,
            variables=dict.fromkeys(found.template.variables, "X"),
            fiscal_year_start=found.fiscal_year_start,
        )
    except ValueError:
        return found.format


async def _on_current(
    services: Services, found: Series, change: Callable[[Series, Connection], Awaitable[T]]
) -> T:
    """Run ``change(series, conn)`` on a connection of its own, on the series' current
    definition (``Issuer.on_current``)."""

    async def on(series: Series) -> T:
        async with services.pool.acquire() as conn:
            return await change(series, conn)

    return await services.issuer.on_current(found, on)
