"""Typed errors and their one mapping to RFC 9457 ``application/problem+json`` responses.

Every error a client can see is a subclass of :class:`Problem`. Its ``slug`` is the stable part of
the ``type`` URI (``/problems/<slug>``) that clients may switch on; ``detail`` is for humans.
"""

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"

logger = logging.getLogger("docnum.errors")


class Problem(Exception):
    """An error with an HTTP status and a stable problem type."""

    status: int = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status or type(self).status
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})


class BadRequest(Problem):
    status, slug, title = 400, "malformed-request", "Malformed request"


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="docnum"'})


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class SeriesNotFound(NotFound):
    slug, title = "series-not-found", "Series not found"


class NumberNotFound(NotFound):
    slug, title = "number-not-found", "Number not found"


class KeyNotFound(NotFound):
    slug, title = "key-not-found", "Key not found"


class TenantNotFound(NotFound):
    slug, title = "tenant-not-found", "Tenant not found"


class MethodNotAllowed(Problem):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"


class SeriesExists(Conflict):
    slug, title = "series-exists", "Series already exists"


class SeriesArchived(Conflict):
    slug, title = "series-archived", "Series is archived"


class SeriesInUse(Conflict):
    slug, title = "series-in-use", "Numbers were already issued"


class SeriesExhausted(Conflict):
    slug, title = "series-exhausted", "Series is exhausted"


class AlreadyVoided(Conflict):
    slug, title = "already-voided", "Number is already voided"


class NotGapless(Conflict):
    slug, title = "not-gapless", "Only gapless numbers can be voided"


class LedgerDisabled(Conflict):
    slug, title = "ledger-disabled", "This series keeps no ledger"


class IdempotencyKeyInFlight(Conflict):
    slug, title = "idempotency-key-in-flight", "A request with this Idempotency-Key is in progress"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class InvalidRequest(Problem):
    status, slug, title = 422, "invalid-request", "Invalid request"


class IdempotencyKeyReused(InvalidRequest):
    slug, title = "idempotency-key-reused", "Idempotency-Key reused with a different request"


class Unavailable(Problem):
    """The database cannot answer now (down, restarting, or a lock held too long); retry later."""

    status, slug, title = 503, "unavailable", "Service temporarily unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class Overloaded(Unavailable):
    slug, title = "overloaded", "Too many requests in progress"


def field_error(field: str, message: str) -> InvalidRequest:
    """A 422 naming one field, in the same shape as request-validation errors."""
    return InvalidRequest(f"{field}: {message}", errors=[{"field": field, "message": message}])


def problem_body(problem: Problem, instance: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"/problems/{problem.slug}",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if instance:
        body["instance"] = instance
    if problem.errors:
        body["errors"] = problem.errors
    return body


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    return Response(
        json.dumps(problem_body(problem, instance)),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def _from_validation(exc: RequestValidationError) -> Problem:
    errors = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return BadRequest("The request body is not valid JSON.")
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        errors.append({"field": ".".join(location) or "body", "message": str(error.get("msg"))})
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return InvalidRequest(summary or "The request is invalid.", errors=errors)


def _from_http(exc: HTTPException) -> Problem:
    kinds: dict[int, type[Problem]] = {
        400: BadRequest,
        401: Unauthorized,
        403: Forbidden,
        404: NotFound,
        405: MethodNotAllowed,
        413: PayloadTooLarge,
        415: UnsupportedMediaType,
    }
    kind = kinds.get(exc.status_code)
    detail = str(exc.detail)
    if kind is Unauthorized:
        return Unauthorized(detail)
    if kind is None:
        return Problem(detail, status=exc.status_code)
    if kind is NotFound and detail == "Not Found":
        detail = "No such route."
    return kind(detail, headers=dict(exc.headers or {}))


# Failures of the database or of the way to it, not of the request: the client should retry.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.LockNotAvailableError,
    asyncpg.DeadlockDetectedError,
    asyncpg.QueryCanceledError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)


def install_problem_handlers(app: FastAPI) -> None:
    """Route every exception to a problem response; unexpected ones are logged, not shown."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(_from_validation(exc), request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem_response(_from_http(exc), request.url.path)

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        logger.warning("database unavailable on %s: %r", request.url.path, exc)
        if isinstance(exc, asyncpg.LockNotAvailableError):
            detail = "The counter is locked by another transaction for too long; retry."
        else:
            detail = "The database is not reachable right now; retry."
        return problem_response(Unavailable(detail), request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem("An unexpected error occurred."), request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    for kind in UNAVAILABLE_ERRORS:
        app.add_exception_handler(kind, on_unavailable)
    app.add_exception_handler(Exception, on_unexpected)
