"""Issuing numbers, and the ledger of what was issued.

A number is addressed in the path with the ``number`` convertor (see ``app.deps``), so numbers
that contain ``/`` are reachable, percent-encoded or not. The lookup route matches every path
under ``/series/{name}/numbers/`` on GET, so it is declared last: a GET route added there later
must come before it.

A ``201`` names what it issued in ``Location``: the lookup URL of the number (of the first one, for
a batch), when the series keeps the ledger that serves it; replays carry it too.
"""

import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response

from app import auditor, exports, fastpath, ledger
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
from app.issuing import manual
from app.negotiation import negotiate
from app.problems import (
    AlreadyVoided,
    CounterNotRaised,
    DateOrder,
    LedgerDisabled,
    NotChained,
    NotGapless,
    NumberCollision,
    NumberExists,
    NumberHeld,
    NumberNotFound,
    NumberReserved,
    NumberRuleBroken,
    NumberUnreadable,
    PeriodClosed,
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
    ChainReport,
    CounterChange,
    CounterSet,
    DocumentRef,
    ExternalNumber,
    GapReport,
    IssuedBatch,
    IssuedNumber,
    LedgerEntry,
    LedgerPage,
    NextPreview,
    NextRequest,
    NumberPatch,
    NumberStatus,
    VoidRequest,
    decode_variables,
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
        DateOrder,
        PeriodClosed,
        NumberRuleBroken,
        LedgerDisabled,
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
    "period,variables,value,number,date,status,issued_at,void_reason,voided_at,document_ref,"
    "external,chain_seq,chain_hash\r\n"
    "2026,,123,INV-2026-000123,2026-03-31,issued,2026-03-31T14:05:09.123456+00:00,,,"
    "SO-2026-0042,False,123,"
    "5e2b6c0f9d1a4e7b8c3d2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c\r\n"
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
    document_ref: Annotated[
        DocumentRef | None,
        Query(description="Only the numbers of this document (exactly this reference)."),
    ] = None,
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
            document_ref=document_ref,
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
        document_ref=document_ref,
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


@router.patch(
    "/numbers/{number:number}",
    summary="Attach a document reference to a number of the ledger",
    description="Everything after `/numbers/` is the number. Audited with the reference it "
    "replaces.",
    response_model=LedgerEntry,
    responses=key_problems(*JSON_BODY_PROBLEMS, SeriesNotFound, NumberNotFound, LedgerDisabled),
)
async def annotate_number(
    name: SeriesNameParam,
    number: NumberParam,
    body: NumberPatch,
    principal: PrincipalDep,
    services: ServicesDep,
) -> LedgerEntry:
    series = await _with_ledger(services, principal.tenant_id, name)
    async with services.pool.acquire() as conn:
        return await ledger.annotate(conn, series, number, body.document_ref, actor=principal.actor)


@router.put(
    "/counters/{period}",
    summary="Set a counter's last value (go-live), upwards only",
    description="The counter is the period with the {var:...} values of `variables`, as `next` "
    "resolves it; it is created if the period has none, so each period can start from its own "
    "value. A gapless counter records every value it passes as voided with the reason. Audited.",
    response_model=CounterChange,
    responses={
        **success_headers(200, REPLAYED_HEADER),
        **admin_problems(
            *JSON_BODY_PROBLEMS,
            SeriesNotFound,
            SeriesArchived,
            PeriodClosed,
            CounterNotRaised,
            NumberCollision,
            TooManyCounters,
            *IDEMPOTENCY_PROBLEMS,
        ),
    },
)
async def set_counter(
    name: SeriesNameParam,
    period: Annotated[str, Path(pattern=PERIOD_PATTERN, examples=["2026"])],
    body: CounterSet,
    admin: AdminDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """With an Idempotency-Key, a retry gets the first answer instead of 409 not-raised."""

    async def change(series: Series) -> tuple[int, bytes, bool]:
        async def set_it(conn: Connection) -> tuple[int, bytes]:
            changed = await manual.set_counter(
                conn,
                services.issuer,
                series,
                period=period,
                day=body.date,
                variables=body.variables,
                last_value=body.last_value,
                reason=body.reason,
                actor=admin.actor,
                max_counters=services.settings.max_counters_per_series,
            )
            return 200, changed.model_dump_json().encode()

        request = {"period": period, **body.model_dump(mode="json")}
        return await once_per_key(services, series, idempotency_key, "setCounter", request, set_it)

    series = await services.catalog.get(admin.tenant_id, name)
    status, content, replayed = await services.issuer.on_current(series, change)
    return json_answer(status, content, replayed=replayed)


@router.post(
    "/numbers",
    status_code=201,
    summary="Record a number issued elsewhere",
    description="For migrated history, a paper pad or an offline invoice. The number must read "
    "as one the series renders for `date` (with its format on that date, or an earlier one) "
    "and must not be in the ledger; it is recorded as `external`. A counter below its value "
    "moves up to it (gapless: the values passed are recorded as voided, naming the number), so "
    "the series never hands it out. Audited.",
    response_model=LedgerEntry,
    responses={
        **success_headers(201, "Location", REPLAYED_HEADER),
        **admin_problems(
            *JSON_BODY_PROBLEMS,
            SeriesNotFound,
            SeriesArchived,
            PeriodClosed,
            LedgerDisabled,
            NumberUnreadable,
            NumberExists,
            NumberHeld,
            NumberCollision,
            TooManyCounters,
            *IDEMPOTENCY_PROBLEMS,
        ),
    },
)
async def record_number(
    name: SeriesNameParam,
    body: ExternalNumber,
    admin: AdminDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    async def change(series: Series) -> tuple[int, bytes, bool]:
        async def record(conn: Connection) -> tuple[int, bytes]:
            entry = await manual.record_external(
                conn,
                services.issuer,
                series,
                body,
                actor=admin.actor,
                max_counters=services.settings.max_counters_per_series,
            )
            return 201, entry.model_dump_json().encode()

        request = body.model_dump(mode="json")
        return await once_per_key(
            services, series, idempotency_key, "recordNumber", request, record
        )

    series = await services.catalog.get(admin.tenant_id, name)
    status, content, replayed = await services.issuer.on_current(series, change)
    headers = {"Location": fastpath.number_url(name, body.number)}
    return json_answer(status, content, replayed=replayed, headers=headers)


@router.get(
    "/next-preview",
    summary="The number the next request would get, without taking it",
    description="Nothing is reserved: another request may take it first. In cached mode it is "
    "the first value no process holds; a process holding a block of values hands out lower "
    "ones first.",
    responses=key_problems(SeriesNotFound, SeriesArchived, PeriodClosed, SeriesExhausted),
)
async def preview_next(
    name: SeriesNameParam,
    principal: PrincipalDep,
    services: ServicesDep,
    date: Annotated[
        datetime.date | None, Query(description="The document's date; default: today.")
    ] = None,
    variables: Annotated[
        str | None,
        Query(
            pattern=COUNTER_VARIABLES_PATTERN,
            max_length=1000,
            examples=["branch=BR07"],
            description="The {var:...} values, as name=value pairs joined by ','.",
        ),
    ] = None,
) -> NextPreview:
    series = await services.catalog.get(principal.tenant_id, name)
    return await manual.preview(
        services.pool,
        services.issuer,
        series,
        day=date,
        variables=decode_variables(variables or ""),
    )


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
    "/verify",
    summary="Verify the hash chain of a period's ledger",
    description="Recomputes the SHA-256 chain of each counter of the period (of one counter with "
    "`variables`) and checks every ledger row against the chain's last event for it. Each "
    "counter's report names its first broken link. Gapless series only.",
    responses=key_problems(SeriesNotFound, NotChained),
)
async def verify_chain(
    name: SeriesNameParam,
    principal: PrincipalDep,
    services: ServicesDep,
    period: Period = None,
    variables: CounterVariablesQuery = None,
) -> ChainReport:
    """The period defaults to the current one."""
    series = auditor.chained(await services.catalog.get(principal.tenant_id, name))
    chosen = period or services.issuer.current_period(series)
    return await auditor.verify(services.pool, series, chosen, variables)


@router.get(
    "/export",
    summary="One ZIP for the auditor: a period's ledger, chain, voids, gaps and configuration",
    description="`ledger.csv`, `chain.csv` (every event with the content that was hashed), "
    "`voids.csv`, `gaps.json`, `configuration.json` (the series and its history from the audit "
    "trail) and `head.json` (each counter's chain head and its verification), read in one "
    "snapshot. The period defaults to the current one. Gapless series only.",
    response_class=Response,
    responses={
        200: {
            "content": {
                auditor.ZIP: {
                    "schema": {"type": "string", "format": "binary"},
                    "example": "(a ZIP: ledger.csv, chain.csv, voids.csv, gaps.json, "
                    "configuration.json, head.json)",
                }
            }
        },
        **admin_problems(SeriesNotFound, NotChained, TooManyExports),
    },
)
async def export_period(
    name: SeriesNameParam, admin: AdminDep, services: ServicesDep, period: Period = None
) -> Response:
    series = auditor.chained(await services.catalog.get(admin.tenant_id, name))
    chosen = period or services.issuer.current_period(series)
    body = await auditor.archive(
        services.pool, services.exports, series, chosen, services.issuer.clock()
    )
    return auditor.zip_response(body, f"{name}-{chosen}-audit.zip")


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
