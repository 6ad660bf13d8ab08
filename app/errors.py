"""Typed errors and their one mapping to RFC 9457 ``application/problem+json`` responses.

Every error a client can see is a subclass of :class:`Problem`. Its ``slug`` is the stable part of
the ``type`` URI (``/problems/<slug>``) that clients may switch on; ``detail`` is for humans.
"""

import json
import logging
from collections.abc import Callable, Mapping, Sequence
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
    # What the problem means and what to do about it, for its page at /problems/<slug>.
    description: ClassVar[str] = (
        "The service failed in a way it did not expect; nothing in the request is known to be "
        "wrong. Retry once; if it happens again, report the response's `X-Request-ID` to the "
        "operators."
    )
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
    description = (
        "The request could not be read: the body is not valid JSON, or a header is "
        "malformed. Fix the request before sending it again."
    )


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"
    description = (
        "No API key was sent, or the key is unknown, malformed or revoked. Send "
        "`Authorization: Bearer <key>` with a valid key of your tenant."
    )
    documented_headers: ClassVar[Mapping[str, str]] = {
        "WWW-Authenticate": "The scheme to authenticate with: Bearer."
    }

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="docnum"'})


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Not allowed"
    description = (
        "The key is valid but its scope does not allow this operation (an `issue` key on "
        "an administrative route). Use an `admin` key of the tenant."
    )


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"
    description = (
        "Nothing is served at this path. Check the path against the API description at `/docs`."
    )


class SeriesNotFound(NotFound):
    slug, title = "series-not-found", "Series not found"
    description = (
        "The tenant has no series of this name (another tenant's series are not visible)."
        " Check the name, or create the series."
    )


class NumberNotFound(NotFound):
    slug, title = "number-not-found", "Number not found"
    description = (
        "The series' ledger holds no such number. Check the number, percent-encoded in "
        "the path, and the series."
    )


class KeyNotFound(NotFound):
    slug, title = "key-not-found", "Key not found"
    description = "The tenant has no API key with this prefix. List the keys to find the prefix."


class TenantNotFound(NotFound):
    slug, title = "tenant-not-found", "Tenant not found"
    description = "No tenant has this name. Check the name, or create the tenant with a key."


class MethodNotAllowed(Problem):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"
    description = (
        "The path exists but not with this method. The `Allow` header lists the methods it serves."
    )


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"
    description = (
        "The request conflicts with the current state of the resource. Read the resource "
        "again and decide."
    )


class SeriesExists(Conflict):
    slug, title = "series-exists", "Series already exists"
    description = (
        "A series of this name already exists in the tenant. Pick another name, or use "
        "the existing series."
    )


class SeriesArchived(Conflict):
    slug, title = "series-archived", "Series is archived"
    description = (
        "The series is archived and issues no numbers; what it issued stays readable. "
        "Restore it (`POST /series/{name}/restore`) or use another series."
    )


class SeriesInUse(Conflict):
    slug, title = "series-in-use", "Numbers were already issued"
    description = (
        "Mode, reset, start, step, fiscal year start and shared counter cannot change "
        "once a number was issued. Create a new series for the new numbering."
    )


class FormatConflict(Conflict):
    slug, title = "format-conflict", "The format could render an earlier number"
    description = (
        "The new format could render a number that an earlier format of the series can "
        "render, so one number could be issued twice. Add a literal prefix or separator "
        "no earlier format has, or start a new series."
    )


class SeriesExhausted(Conflict):
    slug, title = "series-exhausted", "Series is exhausted"
    description = (
        "The counter reached the series' `max_value`; a series never wraps. Raise "
        "`max_value`, or start a new series."
    )


class TooManyCounters(Conflict):
    slug, title = "too-many-counters", "The series has as many counters as it may have"
    description = (
        "A number would need a new counter (a new period, or new values of the variables the "
        "number shows), and the series has as many as the service allows "
        "(`DOCNUM_MAX_COUNTERS_PER_SERIES`). Numbers of its existing counters are still issued; "
        "ask the operator to raise the limit, or share one counter across variable values."
    )


class NumberCollision(Conflict):
    slug, title = "number-collision", "Number already in the ledger"
    description = (
        "The number rendered for this request is already in the ledger (variables that "
        "render alike, or a changed format); nothing was issued. Send other variables, or"
        " change the format."
    )


class AlreadyVoided(Conflict):
    slug, title = "already-voided", "Number is already voided"
    description = (
        "The number was voided before; it stays voided with its first reason. Nothing to do."
    )


class NotGapless(Conflict):
    slug, title = "not-gapless", "Only gapless numbers can be voided"
    description = (
        "Only numbers of a gapless series can be voided; the other modes may skip values "
        "anyway. Nothing to void."
    )


class LedgerDisabled(Conflict):
    slug, title = "ledger-disabled", "This series keeps no ledger"
    description = (
        "The series records no ledger, so there is nothing to list, look up or check for "
        "gaps. Turn `ledger` on for numbers issued from now on."
    )


class IdempotencyKeyInFlight(Conflict):
    slug, title = "idempotency-key-in-flight", "A request with this Idempotency-Key is in progress"
    description = (
        "A request with the same `Idempotency-Key` is still being served. Retry after "
        "`Retry-After` seconds to get its answer."
    )
    documented_headers: ClassVar[Mapping[str, str]] = RETRY_AFTER


class PreconditionFailed(Problem):
    status, slug, title = 412, "precondition-failed", "The resource changed since it was read"
    description = (
        "The `If-Match` header names a version (`ETag`) the resource no longer has: someone "
        "changed it since you read it, and nothing was changed now. Read it again (`GET`), "
        "decide on the change with what it now is, and send it with the new `ETag`."
    )


class PreconditionRequired(Problem):
    status, slug, title = 428, "precondition-required", "If-Match is required"
    description = (
        "The service requires changes to name the version they were made from "
        "(`DOCNUM_REQUIRE_IF_MATCH`), so that two people changing one resource cannot silently "
        "overwrite each other. Read the resource, and send its `ETag` as `If-Match`."
    )


class RateLimited(Problem):
    status, slug, title = 429, "rate-limited", "Too many requests for this key or tenant"
    description = (
        "The key, or its tenant's keys together, made as many requests as the service allows "
        "in the window (`DOCNUM_KEY_RATE_LIMIT`, `DOCNUM_TENANT_RATE_LIMIT`); nothing was done. "
        "Retry after `Retry-After` seconds. `RateLimit-Policy` names the quotas and `RateLimit` "
        "the one that ran out (draft-ietf-httpapi-ratelimit-headers); every answer to a key "
        "carries them, so a client can slow down before it is refused."
    )
    documented_headers: ClassVar[Mapping[str, str]] = {
        **RETRY_AFTER,
        "RateLimit-Policy": 'The quotas: `"key";q=600;w=60, "tenant";q=6000;w=60` (requests `q` '
        "per `w` seconds, per key and per tenant).",
        "RateLimit": 'The quota that ran out: `"key";r=0;t=12` (`r` requests left, `t` seconds '
        "until one is free again).",
    }


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Request body too large"
    description = (
        "The request body is larger than the service accepts (`DOCNUM_MAX_BODY_BYTES`). "
        "Send a smaller body, for instance a smaller batch."
    )


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"
    description = (
        "The body is not sent as `application/json`. Send JSON with `Content-Type: "
        "application/json`."
    )


class InvalidRequest(Problem):
    status, slug, title = 422, "invalid-request", "Invalid request"
    description = (
        "A field, parameter or header is invalid; `errors` names each one with the "
        "reason. Fix them before sending the request again."
    )


class IdempotencyKeyReused(InvalidRequest):
    slug, title = "idempotency-key-reused", "Idempotency-Key reused with a different request"
    description = (
        "The `Idempotency-Key` was used before for a different request (another body, "
        "route or number). Use a new key for a new request; reuse a key only to retry the"
        " same request."
    )


class Unavailable(Problem):
    """The database cannot answer now (down, restarting, or a lock held too long); retry later."""

    status, slug, title = 503, "unavailable", "Service temporarily unavailable"
    description = (
        "The database cannot answer now (down, restarting, or a lock held too long); "
        "nothing was changed by this request. Retry after `Retry-After` seconds."
    )
    documented_headers: ClassVar[Mapping[str, str]] = RETRY_AFTER

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class Overloaded(Unavailable):
    slug, title = "overloaded", "Too many requests in progress"
    description = (
        "The process is serving as many requests as it allows at once. Retry after "
        "`Retry-After` seconds, or spread the load."
    )


class TooManyExports(Unavailable):
    slug, title = "too-many-exports", "Too many ledger exports in progress"
    description = (
        "The process is streaming as many CSV exports as it allows at once. Retry after "
        "`Retry-After` seconds."
    )


def problem_types() -> list[type[Problem]]:
    """Every problem class, ``Problem`` first and then each subclass after its parent."""
    found: list[type[Problem]] = []
    pending: list[type[Problem]] = [Problem]
    while pending:
        kind = pending.pop(0)
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


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


def problem_bytes(problem: Problem, instance: str | None = None) -> bytes:
    return json.dumps(problem_body(problem, instance)).encode()


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    return Response(
        problem_bytes(problem, instance),
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
    # A failover under way: the server reached is a standby, or was demoted, or no host named
    # in the URL accepts writes yet.
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.TargetServerAttributeNotMatched,
)


READ_ONLY_ERRORS = (asyncpg.ReadOnlySQLTransactionError, asyncpg.TargetServerAttributeNotMatched)


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


def _unavailable(exc: Exception) -> Unavailable:
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return Unavailable("The counter is locked by another transaction for too long; retry.")
    if isinstance(exc, TimeoutError):
        return Unavailable("No database connection became free in time; retry.")
    if isinstance(exc, READ_ONLY_ERRORS):
        return Unavailable("The database accepts no writes right now (a failover?); retry.")
    return Unavailable("The database is not reachable right now; retry.")


def problem_for(request: Request, exc: Exception) -> Problem:
    """The problem that answers ``exc``: the one place exceptions become problems, for the API's
    handlers and the portal's pages alike. Failures that are not the client's are logged."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, RequestValidationError):
        return _from_validation(exc)
    if isinstance(exc, HTTPException):
        problem = _from_http(exc)
        if isinstance(problem, MethodNotAllowed):
            problem.headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem
    if isinstance(exc, UNAVAILABLE_ERRORS) or (
        isinstance(exc, asyncpg.InterfaceError) and _connection_lost(exc)
    ):
        logger.warning("database unavailable on %s: %r", request.url.path, exc)
        return _unavailable(exc)
    if isinstance(exc, UNSTORABLE_TEXT_ERRORS):
        return InvalidRequest(
            "The request contains text the database cannot store (such as a NUL character)."
        )
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Problem("An unexpected error occurred.")


# Answers a problem with a page instead of problem+json (the portal's error page), or returns
# None to leave it to problem+json.
ProblemPage = Callable[[Request, Problem], Response | None]


def answer(request: Request, problem: Problem) -> Response:
    """The response to a problem: the app's problem page when it takes it, else problem+json."""
    page: ProblemPage | None = request.app.state.problem_page
    response = page(request, problem) if page is not None else None
    return response or problem_response(problem, request.url.path)


def install_problem_handlers(app: FastAPI, page: ProblemPage | None = None) -> None:
    """Route every exception to a problem response; unexpected ones are logged, not shown.

    ``page`` may answer a problem as a page instead (the portal's), also when it is found before
    any route is (an unknown method, a body refused by the guards): see :func:`answer`.
    """
    _document_problems(app)
    app.state.problem_page = page

    async def on_error(request: Request, exc: Exception) -> Response:
        return answer(request, problem_for(request, exc))

    handled = (
        Problem,
        RequestValidationError,
        HTTPException,
        *UNAVAILABLE_ERRORS,
        asyncpg.InterfaceError,
        *UNSTORABLE_TEXT_ERRORS,
        Exception,
    )
    for kind in handled:
        app.add_exception_handler(kind, on_error)
