"""Issuing numbers, and the ledger of what was issued.

A number is addressed in the path with the ``number`` convertor (see ``app.deps``), so numbers
that contain ``/`` are reachable, percent-encoded or not. The lookup route matches every path
under ``/series/{name}/numbers/`` on GET, so it is declared last: a GET route added there later
must come before it.

A ``201`` names what it issued in ``Location``: the lookup URL of the number (of the first one, for
a batch), when the series keeps the ledger that serves it; replays carry it too.
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request, Response

from app import exports, fastpath, ledger
from app.database import Connection
from app.definition import CounterKey, Series
from app.deps import (
    IDEMPOTENCY_PROBLEMS,
    JSON_BODY_PROBLEMS,
    AdminDep,
    CursorQuery,
    IdempotencyKeyHeader,
    NumberParam,
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
from app.idempotency import REPLAYED_HEADER
from app.negotiation import negotiate
from app.problems import (
    AlreadyVoided,
    LedgerDisabled,
    NotGapless,
    NumberCollision,
    NumberNotFound,
    NumberReserved,
    SeriesArchived,
    SeriesExhausted,
    SeriesNotFound,
    TooManyCounters,
    TooManyExports,
)
from app.schemas import (
    COUNTER_VARIABLES_PATTERN,
    PERIOD_PATTERN,
    BatchRequest,
    GapReport,
    IssuedBatch,
    IssuedNumber,
    LedgerEntry,
    LedgerPage,
    NextRequest,
    NumberStatus,
    VoidRequest,
)
from app.services import Services

router = APIRouter(prefix="/series/{name}", tags=["numbers"])

ISSUE_RESPONSES = {
    **key_problems(
        *JSON_BODY_PROBLEMS,
        SeriesNotFound,
        SeriesArchived,
        SeriesExhausted,
        TooManyCounters,
        NumberCollision,
        *IDEMPOTENCY_PROBLEMS,
    ),
    **success_headers(201, "Location", REPLAYED_HEADER),
}
LEDGER_RESPONSES = key_problems(SeriesNotFound, LedgerDisabled)


async def _with_ledger(services: Services, tenant_id: int, name: str) -> Series:
    """The series, if it records its numbers; reading a ledger it does not keep is a 409."""
    series = await services.catalog.get(tenant_id, name)
    if not series.ledger:
        raise LedgerDisabled(f"Series {name!r} does not record its numbers (ledger is off).")
    return series


# POST next and batch are served by app.fastpath before routing ever sees them. These
# declarations are the one source of their OpenAPI document (parameters, bodies, answers and
# problems) and never run: if one were reached, it would fail loudly instead of serving.


@router.post(
    "/next",
    status_code=201,
    response_model=IssuedNumber,
    summary="Issue the next number",
    responses=ISSUE_RESPONSES,
)
async def next_number(
    name: SeriesNameParam,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
    body: Annotated[NextRequest | None, Body()] = None,
) -> Response:
    raise fastpath.documented_only("next")


@router.post(
    "/batch",
    status_code=201,
    response_model=IssuedBatch,
    summary="Issue many numbers at once",
    responses=ISSUE_RESPONSES,
)
async def issue_batch(
    name: SeriesNameParam,
    body: BatchRequest,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    raise fastpath.documented_only("batch")


CSV_EXAMPLE = (
    "period,variables,value,number,date,status,issued_at,void_reason,voided_at\r\n"
    "2026,,123,INV-2026-000123,2026-03-31,issued,2026-03-31T14:05:09.123456+00:00,,\r\n"
)

Period = Annotated[str | None, Query(pattern=PERIOD_PATTERN, examples=["2026"])]
CounterVariablesQuery = Annotated[
    str | None,
    Query(
        pattern=COUNTER_VARIABLES_PATTERN,
        max_length=1000,
        examples=["branch=BR07"],
        description="A counter's variable values, as name=value pairs sorted by name and "
        "joined by ','; empty for the counter without variables.",
    ),
]


JSON = "application/json"
CSV = "text/csv"
LEDGER_LIST_RESPONSES = {
    **success_headers(200, "Link", "Vary"),
    **key_problems(SeriesNotFound, LedgerDisabled, TooManyExports),
}
LEDGER_LIST_RESPONSES[200]["content"] = {CSV: {"example": CSV_EXAMPLE}}


@router.get(
    "/numbers",
    response_model=LedgerPage,
    summary="The ledger of issued numbers, as JSON pages or one CSV",
    description="CSV when `format=csv`, or when the `Accept` header prefers `text/csv` to "
    "`application/json` (q-values count: `application/json, text/csv;q=0.1` gets JSON). A CSV "
    "holds the whole ledger (with the filters), not a page; its timestamps are ISO 8601.",
    responses=LEDGER_LIST_RESPONSES,
)
async def list_numbers(
    name: SeriesNameParam,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    period: Period = None,
    variables: CounterVariablesQuery = None,
    status: NumberStatus | None = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Annotated[
        Literal["json", "csv"] | None,
        Query(description="For tools that cannot set `Accept`: wins over the header."),
    ] = None,
) -> LedgerPage | Response:
    series = await _with_ledger(services, principal.tenant_id, name)
    wanted = {"json": JSON, "csv": CSV}[format] if format else None
    if (wanted or negotiate(request.headers.get("accept"), (JSON, CSV))) == CSV:
        csv = await exports.csv_response(
            services.pool,
            services.exports,
            series,
            period=period,
            variables=variables,
            status=status,
            filename=f"{name}-ledger.csv",
        )
        csv.headers["Vary"] = "Accept"
        return csv
    response.headers["Vary"] = "Accept"
    items, next_cursor = await ledger.page(
        services.pool,
        series,
        period=period,
        variables=variables,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    link_next(request, response, next_cursor)
    return LedgerPage(items=items, next_cursor=next_cursor, has_more=next_cursor is not None)


@router.post(
    "/numbers/{number:number}/void",
    summary="Void a gapless number, keeping it in the ledger",
    description="Everything between `/numbers/` and the final `/void` is the number, so "
    "`…/numbers/N1/void/void` voids the number `N1/void`.",
    response_model=LedgerEntry,
    responses={
        **success_headers(200, REPLAYED_HEADER),
        **admin_problems(
            *JSON_BODY_PROBLEMS,
            SeriesNotFound,
            NumberNotFound,
            AlreadyVoided,
            NumberReserved,
            NotGapless,
            *IDEMPOTENCY_PROBLEMS,
        ),
    },
)
async def void_number(
    name: SeriesNameParam,
    number: NumberParam,
    body: VoidRequest,
    admin: AdminDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """With an Idempotency-Key, a retry gets the first answer instead of 409 already-voided."""
    series = await services.catalog.get(admin.tenant_id, name)

    async def void(conn: Connection) -> tuple[int, bytes]:
        voided = await ledger.void(conn, series, number, body.reason, actor=admin.actor)
        return 200, voided.model_dump_json().encode()

    request = {"number": number, **body.model_dump(mode="json")}
    status, content, replayed = await once_per_key(
        services, series, idempotency_key, "voidNumber", request, void
    )
    return json_answer(status, content, replayed=replayed)


@router.get(
    "/gaps", summary="Values missing from the ledger of one counter", responses=LEDGER_RESPONSES
)
async def find_gaps(
    name: SeriesNameParam,
    principal: PrincipalDep,
    services: ServicesDep,
    period: Period = None,
    variables: CounterVariablesQuery = None,
) -> GapReport:
    """The counter is the period (default: the current one) with the variable values given."""
    series = await _with_ledger(services, principal.tenant_id, name)
    counter = CounterKey(period or services.issuer.current_period(series), variables or "")
    return await ledger.gaps(services.pool, series, counter)


@router.get(
    "/numbers/{number:number}",
    summary="One number of the ledger",
    description="Everything after `/numbers/` is the number, so `GET …/numbers/N1/void` looks up "
    "the number `N1/void`.",
    responses=key_problems(SeriesNotFound, NumberNotFound, LedgerDisabled),
)
async def get_number(
    name: SeriesNameParam, number: NumberParam, principal: PrincipalDep, services: ServicesDep
) -> LedgerEntry:
    series = await _with_ledger(services, principal.tenant_id, name)
    return await ledger.lookup(services.pool, series, number)
