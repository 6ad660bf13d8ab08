"""Issuing numbers, and the ledger of what was issued.

A number is addressed in the path with the ``number`` convertor (see ``app.deps``), so numbers
that contain ``/`` are reachable, percent-encoded or not. The lookup route matches every path
under ``/series/{name}/numbers/`` on GET, so it is declared last: a GET route added there later
must come before it.
"""

import json
from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Request, Response

from app import exports, ledger
from app.definition import CounterKey, Series
from app.deps import (
    JSON_BODY_PROBLEMS,
    AdminDep,
    NumberParam,
    PrincipalDep,
    SeriesNameParam,
    ServicesDep,
    admin_problems,
    key_problems,
)
from app.errors import (
    AlreadyVoided,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    LedgerDisabled,
    NotGapless,
    NumberCollision,
    NumberNotFound,
    SeriesArchived,
    SeriesExhausted,
    SeriesNotFound,
    TooManyCounters,
    TooManyExports,
)
from app.idempotency import KEY_PATTERN, REPLAYED_HEADER, REPLAYED_RESPONSE, request_hash
from app.issued import Claim, Issued
from app.issuing import Answer, check_count
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

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="1 to 255 printable ASCII characters. Retry with the same key to get the "
        "same answer, never a second number.",
    ),
]
ISSUE_RESPONSES = {
    **key_problems(
        *JSON_BODY_PROBLEMS,
        SeriesNotFound,
        SeriesArchived,
        SeriesExhausted,
        TooManyCounters,
        NumberCollision,
        IdempotencyKeyInFlight,
        IdempotencyKeyReused,
    ),
    **REPLAYED_RESPONSE,
}
LEDGER_RESPONSES = key_problems(SeriesNotFound, LedgerDisabled)


async def _with_ledger(services: Services, tenant_id: int, name: str) -> Series:
    """The series, if it records its numbers; reading a ledger it does not keep is a 409."""
    series = await services.catalog.get(tenant_id, name)
    if not series.ledger:
        raise LedgerDisabled(f"Series {name!r} does not record its numbers (ledger is off).")
    return series


def _claim(key: str | None, endpoint: str, body: NextRequest) -> Claim | None:
    """The request's fingerprint is computed only when a key asks for it."""
    if key is None:
        return None
    return Claim(key, request_hash(endpoint, body.model_dump(mode="json")))


def _answer(answer: Answer) -> Response:
    headers = {REPLAYED_HEADER: "true"} if answer.replayed else None
    return Response(answer.body, answer.status, headers, media_type="application/json")


def _one(issued: Issued) -> bytes:
    return json.dumps(
        {
            "series": issued.series,
            "number": issued.numbers[0],
            "value": issued.values[0],
            "period": issued.period,
            "date": issued.date.isoformat(),
            "issued_at": issued.issued_at.isoformat(),
        }
    ).encode()


def _many(issued: Issued) -> bytes:
    return json.dumps(
        {
            "series": issued.series,
            "period": issued.period,
            "date": issued.date.isoformat(),
            "issued_at": issued.issued_at.isoformat(),
            "count": len(issued.values),
            "numbers": issued.numbers,
            "values": issued.values,
        }
    ).encode()


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
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[NextRequest | None, Body()] = None,
) -> Response:
    body = body or NextRequest()
    series = await services.catalog.get(principal.tenant_id, name)
    answer = await services.issuer.issue(
        series,
        count=1,
        date=body.date,
        variables=body.variables,
        claim=_claim(idempotency_key, "next", body),
        respond=_one,
    )
    return _answer(answer)


@router.post(
    "/batch",
    status_code=201,
    response_model=IssuedBatch,
    summary="Issue many numbers at once",
    responses=ISSUE_RESPONSES,
)
async def batch(
    name: SeriesNameParam,
    body: BatchRequest,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    check_count(body.count, services.settings.max_batch)
    series = await services.catalog.get(principal.tenant_id, name)
    answer = await services.issuer.issue(
        series,
        count=body.count,
        date=body.date,
        variables=body.variables,
        claim=_claim(idempotency_key, "batch", body),
        respond=_many,
    )
    return _answer(answer)


CSV_EXAMPLE = (
    "period,variables,value,number,date,status,issued_at,void_reason,voided_at\r\n"
    "2026,,123,INV-2026-000123,2026-03-31,issued,2026-03-31 14:05:09.123456+00:00,,\r\n"
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


@router.get(
    "/numbers",
    response_model=LedgerPage,
    summary="The ledger of issued numbers (as CSV with 'Accept: text/csv')",
    responses={
        200: {"content": {"text/csv": {"example": CSV_EXAMPLE}}},
        **key_problems(SeriesNotFound, LedgerDisabled, TooManyExports),
    },
)
async def numbers(
    name: SeriesNameParam,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    period: Period = None,
    variables: CounterVariablesQuery = None,
    status: NumberStatus | None = None,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_-]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LedgerPage | Response:
    series = await _with_ledger(services, principal.tenant_id, name)
    if "text/csv" in request.headers.get("accept", ""):
        return await exports.csv_response(
            services.pool,
            services.exports,
            series,
            period=period,
            variables=variables,
            status=status,
            filename=f"{name}-ledger.csv",
        )
    items, next_cursor = await ledger.page(
        services.pool,
        series,
        period=period,
        variables=variables,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    return LedgerPage(items=items, next_cursor=next_cursor)


@router.post(
    "/numbers/{number:number}/void",
    summary="Void a gapless number, keeping it in the ledger",
    description="Everything between `/numbers/` and the final `/void` is the number, so "
    "`…/numbers/N1/void/void` voids the number `N1/void`.",
    responses=admin_problems(
        *JSON_BODY_PROBLEMS, SeriesNotFound, NumberNotFound, AlreadyVoided, NotGapless
    ),
)
async def void_number(
    name: SeriesNameParam,
    number: NumberParam,
    body: VoidRequest,
    admin: AdminDep,
    services: ServicesDep,
) -> LedgerEntry:
    series = await services.catalog.get(admin.tenant_id, name)
    async with services.pool.acquire() as conn:
        return await ledger.void(conn, series, number, body.reason, actor=admin.actor)


@router.get(
    "/gaps", summary="Values missing from the ledger of one counter", responses=LEDGER_RESPONSES
)
async def gaps(
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
async def lookup_number(
    name: SeriesNameParam, number: NumberParam, principal: PrincipalDep, services: ServicesDep
) -> LedgerEntry:
    series = await _with_ledger(services, principal.tenant_id, name)
    return await ledger.lookup(services.pool, series, number)
