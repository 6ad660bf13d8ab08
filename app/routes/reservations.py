"""Reservations: numbers held until the caller confirms or releases them (see app.reservations).

Any key of the tenant may reserve, confirm and release. A reservation is addressed by its id
under its series: an id of another series, or of another tenant's, is not found.
"""

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Path, Response

from app import reservations
from app.deps import (
    IDEMPOTENCY_PROBLEMS,
    JSON_BODY_PROBLEMS,
    IdempotencyKeyHeader,
    PrincipalDep,
    SeriesNameParam,
    ServicesDep,
    json_answer,
    key_problems,
    success_headers,
)
from app.idempotency import REPLAYED_HEADER, claim_of
from app.issuing.engine import check_count
from app.issuing.issued import Hold, Issued
from app.problems import (
    LedgerDisabled,
    NumberCollision,
    ReservationConfirmed,
    ReservationExpired,
    ReservationNotFound,
    ReservationReleased,
    SeriesArchived,
    SeriesExhausted,
    SeriesNotFound,
    TooManyCounters,
    field_error,
)
from app.schemas import ConfirmRequest, ReservationOut, ReserveRequest

router = APIRouter(prefix="/series/{name}/reservations", tags=["reservations"])

ReservationIdParam = Annotated[
    uuid.UUID,
    Path(description="The reservation's id.", examples=["7d0c4c52-5a8e-4c57-9a55-1f3c0e1b2a3d"]),
]


@router.post(
    "",
    status_code=201,
    response_model=ReservationOut,
    summary="Reserve numbers until they are confirmed, released, or expire",
    description="The numbers are taken as `next` (or `batch`) would take them and held until "
    "`expires_at`. Confirm them once the document is saved; release them if it is not. A "
    "released or expired gapless number is handed out again when nothing was issued after it, "
    "and is otherwise voided with the reason `released` or `expired`. With an "
    "`Idempotency-Key`, a retry gets the same reservation back.",
    responses={
        **success_headers(201, "Location", REPLAYED_HEADER),
        **key_problems(
            *JSON_BODY_PROBLEMS,
            SeriesNotFound,
            SeriesArchived,
            SeriesExhausted,
            TooManyCounters,
            NumberCollision,
            LedgerDisabled,
            *IDEMPOTENCY_PROBLEMS,
        ),
    },
)
async def reserve_numbers(
    name: SeriesNameParam,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
    body: Annotated[ReserveRequest | None, Body()] = None,
) -> Response:
    body = body or ReserveRequest()
    settings = services.settings
    check_count(body.count, settings.max_batch)
    ttl = body.ttl_seconds or settings.reservation_ttl_seconds
    if ttl > settings.max_reservation_ttl_seconds:
        raise field_error("ttl_seconds", f"must be at most {settings.max_reservation_ttl_seconds}")
    series = await services.catalog.get(principal.tenant_id, name)
    answer = await services.issuer.issue(
        series,
        count=body.count,
        date=body.date,
        variables=body.variables,
        claim=claim_of(idempotency_key, "reserveNumbers", body.model_dump(mode="json")),
        respond=_reserved,
        document_ref=body.document_ref,
        hold=Hold(ttl),
    )
    reservation_id = orjson.loads(answer.body)["id"]
    headers = {"Location": f"/series/{name}/reservations/{reservation_id}"}
    return json_answer(answer.status, answer.body, replayed=answer.replayed, headers=headers)


def _reserved(issued: Issued) -> bytes:
    return reservations.reserved(issued).model_dump_json().encode()


@router.get(
    "/{reservation_id}",
    summary="One reservation, as it is now",
    responses=key_problems(SeriesNotFound, ReservationNotFound),
)
async def get_reservation(
    name: SeriesNameParam,
    reservation_id: ReservationIdParam,
    principal: PrincipalDep,
    services: ServicesDep,
) -> ReservationOut:
    series = await services.catalog.get(principal.tenant_id, name)
    return await reservations.find(services.pool, series, reservation_id)


@router.post(
    "/{reservation_id}/confirm",
    summary="Confirm a reservation: its numbers are issued",
    description="Confirming again answers the same. A reservation released, or not confirmed "
    "before `expires_at` (by the database's clock), is a 409: its numbers are no longer held.",
    responses=key_problems(
        *JSON_BODY_PROBLEMS,
        SeriesNotFound,
        ReservationNotFound,
        ReservationReleased,
        ReservationExpired,
        LedgerDisabled,
    ),
)
async def confirm_reservation(
    name: SeriesNameParam,
    reservation_id: ReservationIdParam,
    principal: PrincipalDep,
    services: ServicesDep,
    body: Annotated[ConfirmRequest | None, Body()] = None,
) -> ReservationOut:
    series = await services.catalog.get(principal.tenant_id, name)
    document_ref = body.document_ref if body else None
    return await reservations.confirm(services.pool, series, reservation_id, document_ref)


@router.delete(
    "/{reservation_id}",
    summary="Release a reservation: its numbers are no longer held",
    description="Releasing again, or releasing an expired reservation, answers it as it is. "
    "A confirmed reservation is a 409: void its numbers instead.",
    responses=key_problems(SeriesNotFound, ReservationNotFound, ReservationConfirmed),
)
async def release_reservation(
    name: SeriesNameParam,
    reservation_id: ReservationIdParam,
    principal: PrincipalDep,
    services: ServicesDep,
) -> ReservationOut:
    series = await services.catalog.get(principal.tenant_id, name)
    return await reservations.release(services.pool, series, reservation_id)
