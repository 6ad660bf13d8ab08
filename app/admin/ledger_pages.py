"""A series' page: its counters, its format history, its ledger, the gap report; voiding a
number; the CSV download, and for a gapless series the auditor's ZIP of a period (the API's
``GET /series/{name}/export``).

The ledger, the gap report and the CSV are filtered alike: by period, by a counter's variable
values and by status, as the API's ``period``, ``variables`` and ``status`` parameters do; the
ledger and the CSV also by a document reference (``document_ref``). The gap report is per
counter, so it is shown only once the filter names one counter (or the period has at most one).
"""

import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response

from app import auditor, exports, ledger
from app import series as series_sql
from app.admin.forms import FormInvalid, parse, problem_errors
from app.admin.series_pages import series_path
from app.admin.session import AdminSession, AdminSessionDep, CheckedFormDep
from app.admin.web import PortalRoute, redirect, render
from app.definition import CounterKey, Series
from app.deps import ServicesDep
from app.problems import LedgerDisabled, Problem
from app.schemas import (
    COUNTER_VARIABLES_PATTERN,
    LINE_PATTERN,
    PERIOD_PATTERN,
    CounterValue,
    GapReport,
    LedgerEntry,
    VoidRequest,
    decode_variables,
    encode_variables,
)

router = APIRouter(prefix="/admin", route_class=PortalRoute, include_in_schema=False)

PAGE_SIZE = 50
GAP_RUNS_SHOWN = 100
STATUSES = ("issued", "reserved", "voided")
# The counter without variables, in the variables filter (where empty already means "any").
NO_VARIABLES = "none"

# Empty means "any": that is what a filter form sends for its first choice.
PeriodFilter = Annotated[str, Query(max_length=16)]
VariablesFilter = Annotated[str, Query(max_length=1000)]
StatusFilter = Annotated[str, Query(max_length=10)]
DocumentFilter = Annotated[str, Query(max_length=200)]
NumberQuery = Annotated[str, Query(min_length=1, max_length=64)]


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    """What the ledger, the gap report and the CSV are filtered on; None is "any"."""

    period: str | None
    variables: str | None  # a counter's variables, encoded as the ledger stores them
    status: str | None
    document_ref: str | None = None

    @classmethod
    def of(cls, period: str, variables: str, status: str, document_ref: str = "") -> "LedgerFilter":
        """Anything that is not a period, a counter's variables, a status or a document
        reference filters nothing."""
        chosen_variables = "" if variables == NO_VARIABLES else variables or None
        if chosen_variables and not re.fullmatch(COUNTER_VARIABLES_PATTERN, chosen_variables):
            chosen_variables = None
        reference = document_ref.strip()
        return cls(
            period if re.fullmatch(PERIOD_PATTERN, period) else None,
            chosen_variables,
            status if status in STATUSES else None,
            reference if reference and re.fullmatch(LINE_PATTERN, reference) else None,
        )

    @property
    def variables_param(self) -> str | None:
        """The variables filter as the portal's links and its select send it."""
        return NO_VARIABLES if self.variables == "" else self.variables

    @property
    def query(self) -> str:
        """The filter as the query of a portal link (without the "?")."""
        chosen = {
            "period": self.period,
            "variables": self.variables_param,
            "status": self.status,
            "document_ref": self.document_ref,
        }
        return urlencode({k: v for k, v in chosen.items() if v is not None})


@dataclass(frozen=True, slots=True)
class CounterRow:
    """A counter as the series page lists it, with the link that filters the ledger on it."""

    key: CounterKey
    variables: dict[str, str]
    last_value: int | None

    @classmethod
    def of(cls, counter: CounterValue) -> "CounterRow":
        encoded = encode_variables(counter.variables, counter.variables)
        return cls(CounterKey(counter.period, encoded), counter.variables, counter.last_value)

    @property
    def query(self) -> str:
        return LedgerFilter(self.key.period, self.key.variables, None).query


def _gap_counter(
    chosen: LedgerFilter, current: str, counters: list[CounterRow]
) -> CounterKey | None:
    """The one counter the filter names; None when the period has several and none is chosen."""
    period = chosen.period or current
    if chosen.variables is not None:
        return CounterKey(period, chosen.variables)
    in_period = [c.key for c in counters if c.key.period == period]
    if len(in_period) > 1:
        return None
    return in_period[0] if in_period else CounterKey(period, "")


def _variable_choices(counters: list[CounterRow]) -> list[tuple[str, dict[str, str]]]:
    """The variables filter's options beyond "any": none for a series without variables."""
    found = sorted({c.key.variables for c in counters})
    if found in ([], [""]):
        return []
    return [(v or NO_VARIABLES, decode_variables(v)) for v in found]


@router.get("/series/{name}")
async def series_page(
    request: Request,
    name: str,
    signed_in: AdminSessionDep,
    services: ServicesDep,
    period: PeriodFilter = "",
    variables: VariablesFilter = "",
    status: StatusFilter = "",
    document_ref: DocumentFilter = "",
    cursor: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    pool = services.pool
    found = await series_sql.fetch(pool, signed_in.principal.tenant_id, name)
    chosen = LedgerFilter.of(period, variables, status, document_ref)
    now = services.issuer.clock()
    current = found.current_period(now)
    counters = [CounterRow.of(c) for c in await series_sql.counters(pool, found)]
    entries: list[LedgerEntry] = []
    next_cursor: str | None = None
    gap_counter = _gap_counter(chosen, current, counters)
    gaps: GapReport | None = None
    if found.ledger:
        entries, next_cursor = await ledger.page(
            pool,
            found,
            period=chosen.period,
            variables=chosen.variables,
            status=chosen.status,
            cursor=cursor,
            limit=PAGE_SIZE,
            document_ref=chosen.document_ref,
        )
        if gap_counter is not None:
            gaps = await ledger.gaps(pool, found, gap_counter)
    return render(
        request,
        "series.html",
        signed_in=signed_in,
        series=found,
        in_force=found.format_for(found.today(now)),
        counters=counters,
        periods=list(dict.fromkeys(c.key.period for c in reversed(counters))),
        variable_choices=_variable_choices(counters),
        current_period=current,
        chosen=chosen,
        gap_period=chosen.period or current,
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
    variables: VariablesFilter = "",
    status: StatusFilter = "",
    document_ref: DocumentFilter = "",
) -> Response:
    found = await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    if not found.ledger:
        raise LedgerDisabled(f"Series {name!r} does not record its numbers (ledger is off).")
    chosen = LedgerFilter.of(period, variables, status, document_ref)
    counter = f"-{chosen.variables}" if chosen.variables else ""
    filename = f"{name}-{chosen.period or 'all'}{counter}-ledger.csv"
    return await exports.csv_response(
        services.pool,
        services.exports,
        found,
        period=chosen.period,
        variables=chosen.variables,
        status=chosen.status,
        filename=filename,
        document_ref=chosen.document_ref,
    )


@router.get("/series/{name}/audit.zip")
async def audit_zip(
    name: str, signed_in: AdminSessionDep, services: ServicesDep, period: PeriodFilter = ""
) -> Response:
    """The period filtered on, or else the current one."""
    found = auditor.chained(
        await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    )
    chosen = LedgerFilter.of(period, "", "").period or services.issuer.current_period(found)
    body = await auditor.archive(
        services.pool, services.exports, found, chosen, services.issuer.clock()
    )
    return auditor.zip_response(body, f"{name}-{chosen}-audit.zip")


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
