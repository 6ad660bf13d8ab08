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
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"

logger = logging.getLogger("docnum.errors")


RETRY_AFTER: Mapping[str, str] = {"Retry-After": "Seconds to wait before retrying."}


class Problem(Exception):
    """An error with an HTTP status and a stable problem type."""

    status: int = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    # Headers every instance sends, by name, with what they mean (for the OpenAPI document).
    documented_headers: ClassVar[Mapping[str, str]] = {}

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
    documented_headers: ClassVar[Mapping[str, str]] = {
        "WWW-Authenticate": "The scheme to authenticate with: Bearer."
    }

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


class FormatConflict(Conflict):
    slug, title = "format-conflict", "The format could render an earlier number"


class SeriesExhausted(Conflict):
    slug, title = "series-exhausted", "Series is exhausted"


class TooManyCounters(Conflict):
    slug, title = "too-many-counters", "The series has as many counters as it may have"


class NumberCollision(Conflict):
    slug, title = "number-collision", "Number already in the ledger"


class AlreadyVoided(Conflict):
    slug, title = "already-voided", "Number is already voided"


class NotGapless(Conflict):
    slug, title = "not-gapless", "Only gapless numbers can be voided"


class LedgerDisabled(Conflict):
    slug, title = "ledger-disabled", "This series keeps no ledger"


class IdempotencyKeyInFlight(Conflict):
    slug, title = "idempotency-key-in-flight", "A request with this Idempotency-Key is in progress"
    documented_headers: ClassVar[Mapping[str, str]] = RETRY_AFTER


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
    documented_headers: ClassVar[Mapping[str, str]] = RETRY_AFTER

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class Overloaded(Unavailable):
    slug, title = "overloaded", "Too many requests in progress"


class TooManyExports(Unavailable):
    slug, title = "too-many-exports", "Too many ledger exports in progress"


def field_error(field: str, message: str) -> InvalidRequest:
    """A 422 naming one field, in the same shape as request-validation errors."""
    return InvalidRequest(f"{field}: {message}", errors=[{"field": field, "message": message}])


class FieldError(BaseModel):
    field: str = Field(examples=["count"], description="Dotted path of the offending input.")
    message: str


class ProblemDetail(BaseModel):
    """The body of every error response (RFC 9457), as the OpenAPI document describes it."""

    type: str = Field(
        examples=["/problems/series-not-found"], description="Stable; switch on this."
    )
    title: str
    status: int
    detail: str = Field(description="For humans; may change.")
    instance: str | None = Field(default=None, description="The path that was requested.")
    errors: list[FieldError] | None = Field(
        default=None, description="One entry per invalid input (422 only)."
    )


PROBLEM_SCHEMA_REF = {"$ref": "#/components/schemas/ProblemDetail"}


def problem_responses(*kinds: type[Problem]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problems a route can answer, grouped by status.

    Each status lists the problem types it carries; a header is marked required only when every
    problem of that status sends it.
    """
    by_status: dict[int, list[type[Problem]]] = {}
    for kind in dict.fromkeys(kinds):
        by_status.setdefault(kind.status, []).append(kind)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, members in sorted(by_status.items()):
        names = {name: text for kind in members for name, text in kind.documented_headers.items()}
        responses[status] = {
            "description": "; ".join(f"{kind.title} (`/problems/{kind.slug}`)" for kind in members),
            "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA_REF}},
        }
        if names:
            responses[status]["headers"] = {
                name: {
                    "description": text,
                    "required": all(name in kind.documented_headers for kind in members),
                    "schema": {"type": "string"},
                }
                for name, text in names.items()
            }
    return responses


def _document_problems(app: FastAPI) -> None:
    """Add the ProblemDetail schema that :func:`problem_responses` refers to, once, when the
    OpenAPI document is first built."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()  # FastAPI builds it once and then returns the same dict
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        if "ProblemDetail" not in schemas:
            problem = ProblemDetail.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(problem.pop("$defs", {}))
            schemas["ProblemDetail"] = problem
        return document

    app.openapi = openapi  # type: ignore[method-assign]


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


def invalid_fields(errors: Sequence[Mapping[str, Any]]) -> InvalidRequest:
    """A 422 naming every field pydantic refused, by its path without the ``body`` prefix."""
    fields = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        fields.append({"field": ".".join(location) or "body", "message": str(error.get("msg"))})
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in fields)
    return InvalidRequest(summary or "The request is invalid.", errors=fields)


def _from_validation(exc: RequestValidationError) -> Problem:
    if any(error.get("type") == "json_invalid" for error in exc.errors()):
        return BadRequest("The request body is not valid JSON.")
    return invalid_fields(exc.errors())


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


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path, for a 405's Allow header (Starlette's own
    names only the methods of the first route that matched the path)."""
    routes = request.app.router.routes

    def served(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] is Match.FULL for route in routes)

    return [method for method in HTTP_METHODS if served(method)]


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


def _connection_lost(exc: BaseException) -> bool:
    """Whether a bare ``InterfaceError`` means the database went away, not a misuse of asyncpg.

    asyncpg reports a connection the server dropped as ``InterfaceError`` "... connection is
    closed", for instance when a transaction block tries to roll back after the server went away
    (the error it replaces, in ``__context__``, says so too).
    """
    error: BaseException | None = exc
    while error is not None:
        if isinstance(error, UNAVAILABLE_ERRORS) or "connection is closed" in str(error):
            return True
        error = error.__context__
    return False


# Text a client sent that PostgreSQL refuses to store: a client's mistake, not the service's.
UNSTORABLE_TEXT_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.CharacterNotInRepertoireError,
    asyncpg.UntranslatableCharacterError,
)


def install_problem_handlers(app: FastAPI) -> None:
    """Route every exception to a problem response; unexpected ones are logged, not shown."""
    _document_problems(app)

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(_from_validation(exc), request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        problem = _from_http(exc)
        if isinstance(problem, MethodNotAllowed):
            problem.headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem_response(problem, request.url.path)

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        logger.warning("database unavailable on %s: %r", request.url.path, exc)
        if isinstance(exc, asyncpg.LockNotAvailableError):
            detail = "The counter is locked by another transaction for too long; retry."
        elif isinstance(exc, TimeoutError):
            detail = "No database connection became free in time; retry."
        else:
            detail = "The database is not reachable right now; retry."
        return problem_response(Unavailable(detail), request.url.path)

    async def on_unstorable(request: Request, exc: Exception) -> Response:
        unstorable = InvalidRequest(
            "The request contains text the database cannot store (such as a NUL character)."
        )
        return problem_response(unstorable, request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem("An unexpected error occurred."), request.url.path)

    async def on_interface(request: Request, exc: Exception) -> Response:
        if _connection_lost(exc):
            return await on_unavailable(request, exc)
        return await on_unexpected(request, exc)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    for kind in UNAVAILABLE_ERRORS:
        app.add_exception_handler(kind, on_unavailable)
    app.add_exception_handler(asyncpg.InterfaceError, on_interface)
    for kind in UNSTORABLE_TEXT_ERRORS:
        app.add_exception_handler(kind, on_unstorable)
    app.add_exception_handler(Exception, on_unexpected)
