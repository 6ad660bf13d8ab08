"""The one mapping of exceptions to RFC 9457 ``application/problem+json`` answers, and the OpenAPI
helpers that document them.

:func:`problem_for` is the one place an exception becomes a :class:`~app.problems.Problem`: the
problems themselves, FastAPI's validation and routing errors, and failures of the database (which
are the client's to retry, so a 503, never a 500). :func:`answer` turns a problem into the app's
problem page or problem+json; :func:`problem_responses` declares per route what it can answer.
"""

import json
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from app.problems import (
    BadRequest,
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Problem,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    invalid_fields,
)
from app.schemas import ProblemDetail

PROBLEM_JSON = "application/problem+json"

logger = logging.getLogger("docnum.errors")


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
    # asyncpg lost track of the connection's protocol state: seen behind PgBouncer when the
    # server behind it went away mid-transaction and PgBouncer answered for it. Nothing was
    # committed (the error comes before the statement is sent), and the connection is dropped.
    asyncpg.InternalClientError,
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
