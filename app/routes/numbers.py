"""Issuing numbers, and the ledger of what was issued."""

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from app import ledger
from app.deps import AdminDep, PrincipalDep, ServicesDep
from app.errors import LedgerDisabled, field_error
from app.idempotency import request_hash
from app.issued import Claim, Issued
from app.issuing import Answer, check_count, document_date
from app.periods import period_key
from app.schemas import (
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
from app.series import Series

router = APIRouter(prefix="/series/{name}", tags=["numbers"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry with the same key to get the same answer, never a second number.",
    ),
]
PRINTABLE_ASCII = frozenset(chr(c) for c in range(0x20, 0x7F))


def _claim(key: str | None, endpoint: str, body: dict[str, object]) -> Claim | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not set(key) <= PRINTABLE_ASCII:
        raise field_error("Idempotency-Key", "must be 1 to 255 printable ASCII characters")
    return Claim(key, request_hash(endpoint, body))


def _answer(answer: Answer) -> Response:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
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
)
async def next_number(
    name: str,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[NextRequest | None, Body()] = None,
) -> Response:
    body = body or NextRequest()
    series = await services.catalog.get(principal.tenant_id, name)
    request = services.issuer.request(
        series,
        count=1,
        date=body.date,
        variables=body.variables,
        claim=_claim(idempotency_key, "next", body.model_dump(mode="json")),
        respond=_one,
    )
    return _answer(await services.issuer.issue(request))


@router.post(
    "/batch",
    status_code=201,
    response_model=IssuedBatch,
    summary="Issue many numbers at once",
)
async def batch(
    name: str,
    body: BatchRequest,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    check_count(body.count, services.settings.max_batch)
    series = await services.catalog.get(principal.tenant_id, name)
    request = services.issuer.request(
        series,
        count=body.count,
        date=body.date,
        variables=body.variables,
        claim=_claim(idempotency_key, "batch", body.model_dump(mode="json")),
        respond=_many,
    )
    return _answer(await services.issuer.issue(request))


Period = Annotated[str | None, Query(max_length=16, examples=["2026"])]


@router.get(
    "/numbers",
    response_model=LedgerPage,
    summary="The ledger of issued numbers (as CSV with 'Accept: text/csv')",
    responses={200: {"content": {"text/csv": {}}}},
)
async def numbers(
    name: str,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    period: Period = None,
    status: NumberStatus | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LedgerPage | Response:
    series = await services.catalog.get(principal.tenant_id, name)
    if not series.ledger:
        raise LedgerDisabled(f"Series {name!r} does not record its numbers (ledger is off).")
    if "text/csv" in request.headers.get("accept", ""):
        return StreamingResponse(
            _csv(services.pool, series, period=period, status=status),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}-ledger.csv"'},
        )
    items, next_cursor = await ledger.page(
        services.pool, series, period=period, status=status, cursor=cursor, limit=limit
    )
    return LedgerPage(items=items, next_cursor=next_cursor)


CSV_COLUMNS = (
    "period",
    "value",
    "number",
    "date",
    "status",
    "issued_at",
    "void_reason",
    "voided_at",
)


async def _csv(
    pool: asyncpg.Pool, series: Series, *, period: str | None, status: str | None
) -> AsyncIterator[str]:
    """The ledger as CSV, sent in chunks as rows arrive from a server-side cursor."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async with pool.acquire() as conn:
        async for row in ledger.stream(conn, series, period=period, status=status):
            writer.writerow([row[c] for c in CSV_COLUMNS])
            if buffer.tell() > 65_536:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


@router.post("/numbers/{number}/void", summary="Void a gapless number, keeping it in the ledger")
async def void_number(
    name: str, number: str, body: VoidRequest, admin: AdminDep, services: ServicesDep
) -> LedgerEntry:
    series = await services.catalog.get(admin.tenant_id, name)
    async with services.pool.acquire() as conn:
        return await ledger.void(conn, series, number, body.reason, actor=admin.actor)


@router.get("/gaps", summary="Values missing from the ledger in a period")
async def gaps(
    name: str, principal: PrincipalDep, services: ServicesDep, period: Period = None
) -> GapReport:
    series = await services.catalog.get(principal.tenant_id, name)
    if not series.ledger:
        raise LedgerDisabled(f"Series {name!r} does not record its numbers (ledger is off).")
    current = period_key(series.reset, document_date(series, None), series.fiscal_year_start)
    return await ledger.gaps(services.pool, series, period or current)
