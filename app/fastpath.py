"""The lean path: ``POST /series/{name}/next`` and ``POST /series/{name}/batch`` as plain ASGI.

Issuing is the service's hot path, and a FastAPI route costs several times the work of issuing a
cached number (dependency resolution, body parsing, response models). So the request layer
(app.middleware) hands these two requests to :func:`serve`, which does only what the route needs:
reads the body, decodes and validates it in one pass (pydantic-core's ``validate_json`` on the
same models the OpenAPI document shows), authenticates from the key cache, calls the issuer and
writes the answer's bytes, built once. Every other request goes to FastAPI.

Invariants, and why they hold:

- One implementation serves these routes. Their FastAPI declarations in app.routes.numbers exist
  for the OpenAPI document only and refuse to run (:class:`NotServedHere`); the request layer
  sends every POST whose path matches their template here, before routing. A start-up check
  (:func:`check_declared`) ties :data:`ROUTES` to those declarations.
- Answers are what the FastAPI route gave, problem for problem: the same checks in the same order
  (body syntax 400, then the key 401, then one 422 listing the path, header and body errors in
  FastAPI's order and words, then the batch size and the series), because a body that fails the
  fast decoder is decoded and validated again exactly as FastAPI does (stdlib ``json``, then the
  models in Python mode) to report it. Only valid requests take the fast decoder's result.
- Errors raised while issuing become problems through the same mapping as FastAPI's handlers
  (:func:`app.http_errors.problem_for`), so a database failure is a 503 here as everywhere.
"""

import json
from typing import Annotated, Any, Literal
from urllib.parse import quote

import orjson
from fastapi.routing import APIRoute
from pydantic import Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from app.auth import Principal
from app.http_errors import PROBLEM_JSON, problem_bytes, problem_for
from app.idempotency import KEY_PATTERN, REPLAYED_HEADER, claim_of
from app.issuing.engine import Answer as IssuerAnswer
from app.issuing.engine import check_count
from app.issuing.issued import Issued
from app.problems import BadRequest, PayloadTooLarge, Unauthorized, invalid_fields
from app.ratelimit import SCOPE_HEADERS
from app.schemas import SERIES_NAME_PATTERN, BatchRequest, NextRequest
from app.services import Services

Action = Literal["next", "batch"]
# The route templates served here, by action; the access log and metrics label requests by them.
ROUTES: dict[str, str] = {"next": "/series/{name}/next", "batch": "/series/{name}/batch"}
PREFIX = "/series/"

AUTHORIZATION = b"authorization"
IDEMPOTENCY_KEY = b"idempotency-key"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"  # as FastAPI names it in error locations
JSON_HEADERS = [(b"content-type", b"application/json")]
PROBLEM_HEADERS = [(b"content-type", PROBLEM_JSON.encode())]
REPLAYED = (REPLAYED_HEADER.lower().encode(), b"true")

# The parameters as the FastAPI declarations type them; used to report what is wrong.
_NAME = TypeAdapter(Annotated[str, Field(pattern=SERIES_NAME_PATTERN)])
_KEY = TypeAdapter(Annotated[str, Field(pattern=KEY_PATTERN)])
_BODIES: dict[str, TypeAdapter[Any]] = {
    "next": TypeAdapter(NextRequest | None),
    "batch": TypeAdapter(BatchRequest),
}
_MODELS: dict[str, type[NextRequest]] = {"next": NextRequest, "batch": BatchRequest}
_MISSING_BODY = {"type": "missing", "loc": ("body",), "msg": "Field required"}

# What a request is answered with: status, headers beyond the content's, body.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class NotServedHere(RuntimeError):
    """Raised by the FastAPI declarations of the routes this module serves, if ever called."""


def documented_only(action: Action) -> NotServedHere:
    return NotServedHere(f"POST {ROUTES[action]} is served by app.fastpath, never by FastAPI")


def match(path: str) -> tuple[str, Action] | None:
    """The series name and action of a path this module serves, as the router would match it:
    the name is one non-empty path segment."""
    if not path.startswith(PREFIX):
        return None
    name, _, action = path[len(PREFIX) :].rpartition("/")
    if not name or "/" in name:
        return None
    if action == "next":
        return name, "next"
    if action == "batch":
        return name, "batch"
    return None


def check_declared(routes: list[Any]) -> None:
    """Fail at start-up if the FastAPI declarations and :data:`ROUTES` have drifted apart."""
    declared = {
        route.path
        for route in routes
        if isinstance(route, APIRoute) and "POST" in (route.methods or ())
    }
    missing = set(ROUTES.values()) - declared
    if missing:
        raise RuntimeError(f"app.fastpath serves routes the app does not declare: {missing}")


async def serve(
    services: Services,
    scope: Scope,
    receive: Receive,
    send: Send,
    match: tuple[str, Action],
    extra_headers: list[tuple[bytes, bytes]],
) -> int:
    """Answer one request; returns the status sent. ``extra_headers`` go on every answer."""
    name, action = match
    try:
        status, headers, body = await _issue(services, scope, receive, name, action)
        content_type = JSON_HEADERS
    except Exception as error:  # every failure becomes its problem, as in FastAPI's handlers
        problem = problem_for(Request(scope), error)
        status, body = problem.status, problem_bytes(problem, scope["path"])
        headers = [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
        content_type = PROBLEM_HEADERS
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *content_type,
                (b"content-length", str(len(body)).encode()),
                *headers,
                *extra_headers,
                *scope.get(SCOPE_HEADERS, ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status


async def _issue(
    services: Services, scope: Scope, receive: Receive, name: str, action: Action
) -> Answer:
    raw = await _read_body(receive, services.settings.max_body_bytes)
    body, body_errors = _decode(action, raw)
    authorization: str | None = None
    key: str | None = None
    for header, value in scope["headers"]:
        if header == AUTHORIZATION and authorization is None:
            authorization = value.decode("latin-1")
        elif header == IDEMPOTENCY_KEY and key is None:
            key = value.decode("latin-1")
    principal = await _authenticate(services, authorization, scope)
    errors = [*_errors(_NAME, name, ("path", "name"))]
    if key is not None:
        errors += _errors(_KEY, key, ("header", IDEMPOTENCY_KEY_HEADER))
    errors += body_errors
    if errors or body is None:
        raise invalid_fields(errors)
    if isinstance(body, BatchRequest):
        check_count(body.count, services.settings.max_batch)
        count, respond = body.count, _many
    else:
        count, respond = 1, _one
    series = await services.catalog.get(principal.tenant_id, name)
    answer = await services.issuer.issue(
        series,
        count=count,
        date=body.date,
        variables=body.variables,
        claim=claim_of(key, action, body.fingerprint()),
        respond=respond,
        document_ref=body.document_ref,
    )
    headers = [REPLAYED] if answer.replayed else []
    if series.ledger:
        headers.append((b"location", number_url(series.name, _first_number(answer)).encode()))
    return answer.status, headers, answer.body


def number_url(series: str, number: str) -> str:
    """The lookup URL of a number, percent-encoded whatever characters it has."""
    return f"/series/{series}/numbers/{quote(number, safe='')}"


def _first_number(answer: IssuerAnswer) -> str:
    """The number a 201 names in ``Location``: the (first) one issued. A replay has only the
    stored body to read it from."""
    if answer.issued is not None:
        return answer.issued.numbers[0]
    stored = orjson.loads(answer.body)
    return str(stored["number"] if "number" in stored else stored["numbers"][0])


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole body; past ``limit`` bytes a 413, whether or not its size was declared."""
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("The request body ended before it was complete.")
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decode(action: Action, raw: bytes) -> tuple[NextRequest | None, list[dict[str, Any]]]:
    """The request's body and, when it is invalid, FastAPI's errors for it (after the key is
    checked, the caller reports them). Malformed JSON is a 400 at once, as in FastAPI."""
    model = _MODELS[action]
    if not raw:  # no body: next takes its defaults, batch needs one
        return (model(), []) if action == "next" else (None, [_MISSING_BODY])
    try:
        return model.__pydantic_validator__.validate_json(raw), []
    except ValidationError:
        pass
    # Invalid as sent: decode and validate it again as FastAPI does, to report it in its words.
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON.") from None
    except (ValueError, RecursionError):  # not UTF-8, or an integer past Python's digit limit
        raise BadRequest("There was an error parsing the body") from None
    errors = _errors(_BODIES[action], value, ("body",))
    if errors:
        return None, errors
    validated = _BODIES[action].validate_python(value, from_attributes=True)
    return (validated or model()), []


def _errors(adapter: TypeAdapter[Any], value: Any, location: tuple[str, ...]) -> list[Any]:
    """FastAPI's validation errors of ``value`` at ``location`` (empty when it is valid)."""
    try:
        adapter.validate_python(value, from_attributes=True)
    except ValidationError as error:
        return [
            {**found, "loc": (*location, *found["loc"])}
            for found in error.errors(include_url=False)
        ]
    return []


async def _authenticate(services: Services, authorization: str | None, scope: Scope) -> Principal:
    """The key of ``Authorization: Bearer <key>``, as FastAPI's HTTPBearer reads it."""
    scheme, _, credentials = (authorization or "").partition(" ")
    credentials = credentials.strip()
    if not (scheme and credentials) or scheme.lower() != "bearer":
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.")
    return await services.authenticate(credentials, scope)


def _one(issued: Issued) -> bytes:
    return orjson.dumps(
        {
            "series": issued.series,
            "number": issued.numbers[0],
            "value": issued.values[0],
            "period": issued.period,
            "date": issued.date.isoformat(),
            "issued_at": issued.issued_at.isoformat(),
        }
    )


def _many(issued: Issued) -> bytes:
    return orjson.dumps(
        {
            "series": issued.series,
            "period": issued.period,
            "date": issued.date.isoformat(),
            "issued_at": issued.issued_at.isoformat(),
            "count": len(issued.values),
            "numbers": issued.numbers,
            "values": issued.values,
        }
    )
