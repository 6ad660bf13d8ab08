"""Guards in front of every route, as plain ASGI so they cost almost nothing per request.

- A process serves at most ``max_concurrent_requests`` at once; more get a 503 with
  ``Retry-After`` at once instead of queueing without bound.
- A request body larger than ``max_body_bytes`` gets a 413, whether or not it declared its size.
- The JSON API accepts only JSON bodies (415 otherwise); the portal's forms are exempt.
- A request cut off before it answered (the server stopping after its grace period cancels it)
  gets a 503 with ``Retry-After`` rather than the server's bare 500. Nothing was answered as
  issued: whatever it committed is found again by a retry with the same Idempotency-Key.
"""

import asyncio

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    Overloaded,
    PayloadTooLarge,
    Problem,
    Unavailable,
    UnsupportedMediaType,
    answer,
)

FORM_PREFIXES = ("/admin",)


class _TooLarge(HTTPException):
    """Raised while the body is read; an HTTPException so body parsing passes it on unchanged."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The body is larger than {limit} bytes.")


class GuardMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_concurrent: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_concurrent = max_concurrent
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        problem = self._refuse(scope, headers)
        if problem is not None:
            await answer(Request(scope), problem)(scope, receive, send)
            return
        self.in_flight += 1
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if b"content-length" in headers:
                # The declared length was checked, and the server reads no further than it.
                await self.app(scope, receive, tracking_send)
            else:
                await self._serve(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not started:
                stopping = Unavailable("The service is stopping; retry.")
                await answer(Request(scope), stopping)(scope, receive, send)
            raise
        finally:
            self.in_flight -= 1

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

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge(self.max_body_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge as error:
            if started:
                raise
            too_large = PayloadTooLarge(str(error.detail))
            await answer(Request(scope), too_large)(scope, receive, send)
