"""The one request layer: every HTTP request passes here first, and only here, outside FastAPI.

For each request it:

- takes the request id (app.logs: the client's ``X-Request-ID`` if usable, else a new one), sets
  it for every line logged while serving, and echoes it in the response;
- applies the guards: a process serves at most ``max_concurrent_requests`` at once (more get a
  503 with ``Retry-After`` at once instead of queueing without bound); a body larger than
  ``max_body_bytes`` gets a 413, whether or not it declared its size; the JSON API accepts only
  JSON bodies (415 otherwise; the portal's forms are exempt);
- sends ``POST /series/{name}/next`` and ``/batch`` to the lean path (app.fastpath), everything
  else to FastAPI;
- adds the rate limits' header fields (app.ratelimit) to the answer of an admitted request, and
  gives back its tenant's place once it is answered;
- once answered, counts the request in the metrics and writes its access line, labelled with the
  route template (never the raw path), also when serving it raised;
- answers a request cut off before it answered (the server stopping after its grace period
  cancels it) with a 503 and ``Retry-After`` rather than the server's bare 500. Nothing was
  answered as issued: whatever it committed is found again by a retry with the same
  Idempotency-Key.

Its own refusals go through the app's problem answer (app.http_errors.answer), so under
``/admin`` they are the portal's error page with its headers, like every other portal error.

It wraps ``send`` and ``receive`` only when it has something to do there: the lean path reports
its status and adds the id to its own headers, so its requests pass through unwrapped; FastAPI's
get one ``send`` wrapper (the status and the id header), and a counting ``receive`` only when the
body's size was not declared (a declared size was checked, and the server reads no further).
"""

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import fastpath, logs, ratelimit
from app.http_errors import answer
from app.problems import Overloaded, PayloadTooLarge, Problem, Unavailable, UnsupportedMediaType
from app.services import Services

FORM_PREFIXES = ("/admin",)

# Takes (method, route template, status, seconds) of every finished request.
Observe = Callable[[str, str, int, float], None]


class _TooLarge(HTTPException):
    """Raised while the body is read; an HTTPException so body parsing passes it on unchanged."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The body is larger than {limit} bytes.")


class RequestLayer:
    def __init__(
        self,
        app: ASGIApp,
        *,
        state: Any,
        observe: Observe,
        max_body_bytes: int,
        max_concurrent: int,
    ) -> None:
        self.app = app
        self.state = state  # the application's state, where the lifespan puts its Services
        self.observe = observe
        self.max_body_bytes = max_body_bytes
        self.max_concurrent = max_concurrent
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = logs.request_id_from(scope["headers"])
        echoed = [(logs.REQUEST_ID_HEADER, request_id.encode())]
        token = logs.current_request_id.set(request_id)
        started = time.perf_counter()
        route: str | None = None
        series: str | None = None
        status = 500  # what the client gets if serving raises before answering
        try:
            headers = dict(scope["headers"])
            problem = self._refuse(scope, headers)
            if problem is not None:
                status = await _answer_with(problem, scope, receive, send, echoed)
                return
            found = fastpath.match(scope["path"]) if scope["method"] == "POST" else None
            self.in_flight += 1
            try:
                if found is not None:
                    route, series = fastpath.ROUTES[found[1]], found[0]
                    services: Services = self.state.services
                    status = await fastpath.serve(services, scope, receive, send, found, echoed)
                else:
                    declared = b"content-length" in headers
                    status = await self._forward(scope, receive, send, echoed, declared)
            except asyncio.CancelledError:
                # Both paths send their answer's start in one go at the end: a status of 500
                # still means nothing was sent.
                if status == 500:
                    stopping = Unavailable("The service is stopping; retry.")
                    with contextlib.suppress(RuntimeError):  # the server saw an answer start
                        status = await _answer_with(stopping, scope, receive, send, echoed)
                raise
            finally:
                self.in_flight -= 1
                tenant = scope.get(ratelimit.SCOPE_TENANT)
                if tenant is not None:
                    self.state.services.rate_limits.finished(tenant)
        finally:
            if route is None:
                route = getattr(scope.get("route"), "path_format", None) or logs.UNMATCHED
                series = scope.get("path_params", {}).get("name")
            seconds = time.perf_counter() - started
            self.observe(scope["method"], route, status, seconds)
            logs.log_request(
                scope["method"], scope["path"], route, series, status, seconds, request_id
            )
        # On an error the id stays set: the server logs the failure with it.
        logs.current_request_id.reset(token)

    def _refuse(self, scope: Scope, headers: dict[bytes, bytes]) -> Problem | None:
        if self.in_flight >= self.max_concurrent:
            return Overloaded(f"More than {self.max_concurrent} requests in progress; retry.")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return PayloadTooLarge(f"The body is larger than {self.max_body_bytes} bytes.")
        has_body = (length is not None and length != b"0") or b"transfer-encoding" in headers
        if has_body and scope["method"] in ("POST", "PUT", "PATCH"):
            media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            # What FastAPI parses as JSON: application/json and application/*+json.
            is_json = media_type == b"application/json" or (
                media_type.startswith(b"application/") and media_type.endswith(b"+json")
            )
            if not is_json and not scope["path"].startswith(FORM_PREFIXES):
                return UnsupportedMediaType("Send the body as application/json.")
        return None

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        echoed: list[tuple[bytes, bytes]],
        declared: bool,
    ) -> int:
        """Serve the request with FastAPI; returns the status it answered with. ``declared``: the
        body's size was declared (and checked), so the server reads no further than it."""
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                limits = scope.get(ratelimit.SCOPE_HEADERS, ())
                message["headers"] = [*message.get("headers", ()), *echoed, *limits]
            await send(message)

        if declared:
            await self.app(scope, receive, send_with_id)
            return status

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge(self.max_body_bytes)
            return message

        try:
            await self.app(scope, counting_receive, send_with_id)
        except _TooLarge as error:
            if started:
                raise
            too_large = PayloadTooLarge(str(error.detail))
            await answer(Request(scope), too_large)(scope, receive, send_with_id)
        return status


async def _answer_with(
    problem: Problem, scope: Scope, receive: Receive, send: Send, echoed: list[tuple[bytes, bytes]]
) -> int:
    """Send the app's answer to ``problem``, with the request id; returns its status."""
    response = answer(Request(scope), problem)
    response.raw_headers += echoed
    await response(scope, receive, send)
    return response.status_code
