"""Logs: one structured line per request, request ids echoed and attached, one format per output."""

import asyncio
import fcntl
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from harness.load import eventually
from harness.processes import ServiceProcess, start_service
from harness.tenants import Tenant, create_series

GENERATED_ID = re.compile(r"^[0-9a-f]{16}$")
LINES_WITHIN = 10.0
EXIT_WITHIN = 20.0

LOCK_COUNTER = """
SELECT c.id FROM counters c JOIN series s ON s.id = c.series_id
WHERE s.tenant_id = $1 AND s.name = $2
FOR UPDATE OF c
"""


def json_lines(service: ServiceProcess) -> list[dict[str, Any]]:
    """Every line the service wrote so far; each must be one JSON object."""
    lines = [line for line in service.log.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def lines_with_id(service: ServiceProcess, request_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + LINES_WITHIN
    while True:
        found = [line for line in json_lines(service) if line.get("request_id") == request_id]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture
def json_service(database_url: str, service_dir: Path) -> Any:
    service = start_service(
        database_url,
        service_dir,
        env={"DOCNUM_LOG_FORMAT": "json", "DOCNUM_LOCK_TIMEOUT_MS": "100"},
    )
    try:
        yield service
    finally:
        service.stop()


async def test_each_request_is_one_json_line_with_route_series_and_request_id(
    json_service: ServiceProcess, tenant: Tenant
) -> None:
    async with httpx.AsyncClient(base_url=json_service.url, timeout=10) as client:
        await create_series(client, tenant, "logged", mode="sequence")
        response = await client.post(
            "/series/logged/next", headers={**tenant.issuer, "X-Request-ID": "order 7/retry 2"}
        )
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == "order 7/retry 2"

    [line] = lines_with_id(json_service, "order 7/retry 2", 1)
    assert line["logger"] == "docnum.access"
    assert line["level"] == "info"
    assert {k: line[k] for k in ("method", "path", "route", "status", "series")} == {
        "method": "POST",
        "path": "/series/logged/next",
        "route": "/series/{name}/next",
        "status": 201,
        "series": "logged",
    }
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    # Every line the process wrote, uvicorn's own included, is JSON (json_lines parses them all).
    startup = [line["message"] for line in json_lines(json_service)]
    assert any("Uvicorn running" in message for message in startup), startup


async def test_lines_logged_while_serving_a_request_carry_its_id(
    json_service: ServiceProcess, pool: asyncpg.Pool, tenant: Tenant
) -> None:
    async with httpx.AsyncClient(base_url=json_service.url, timeout=10) as client:
        await create_series(client, tenant, "locked", mode="gapless")
        first = await client.post("/series/locked/next", headers=tenant.issuer)
        assert first.status_code == 201, first.text
        # Holding the counter's row lock past the service's lock timeout makes it log a warning.
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchval(LOCK_COUNTER, tenant.id, "locked")
            response = await client.post("/series/locked/next", headers=tenant.issuer)
    assert response.status_code == 503, response.text
    request_id = response.headers["x-request-id"]
    assert GENERATED_ID.match(request_id)

    lines = lines_with_id(json_service, request_id, 2)
    by_logger = {line["logger"]: line for line in lines}
    assert by_logger["docnum.access"]["status"] == 503
    assert by_logger["docnum.errors"]["level"] == "warning"
    assert len(lines) == 2, lines


@pytest.mark.parametrize(
    "sent",
    [
        "x" * 129,  # too long
        b"caf\xe9",  # not ASCII
        "",  # empty
    ],
)
async def test_an_unusable_request_id_is_replaced(
    client: httpx.AsyncClient, sent: str | bytes
) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": sent})
    assert response.status_code == 200
    assert GENERATED_ID.match(response.headers["x-request-id"])


async def test_a_request_id_of_128_printable_characters_is_kept(client: httpx.AsyncClient) -> None:
    sent = "A-z0-9 ~!" * 14 + "AB"
    assert len(sent) == 128
    response = await client.get("/healthz", headers={"X-Request-ID": sent})
    assert response.headers["x-request-id"] == sent


async def test_requests_without_an_id_get_distinct_ones(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/healthz")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5
    assert all(GENERATED_ID.match(i) for i in ids)


async def test_problem_responses_carry_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/no-such-route", headers={"X-Request-ID": "lost-1"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "lost-1"


EMIT = """
import logging
from app import logs
from app.settings import Settings
logs.configure(Settings(log_format="auto"))
logging.getLogger("docnum.example").warning("hello %s", "there")
"""


def run_logging(stderr: int) -> None:
    subprocess.run([sys.executable, "-c", EMIT], stderr=stderr, check=True, timeout=30)


def test_auto_format_is_text_on_a_terminal() -> None:
    leader, follower = os.openpty()
    try:
        run_logging(follower)
        output = os.read(leader, 4096).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert re.search(r"WARNING +docnum\.example: hello there", output), output
    assert "{" not in output


def test_auto_format_is_json_when_not_a_terminal(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    with path.open("wb") as out:
        run_logging(out.fileno())
    [line] = [json.loads(text) for text in path.read_text().splitlines()]
    assert {k: line[k] for k in ("level", "logger", "message")} == {
        "level": "warning",
        "logger": "docnum.example",
        "message": "hello there",
    }


# A line as the text format writes it, to be forged by what a client sends.
FORGED = "2026-01-01 00:00:00,000 INFO    docnum.access: GET /forged 200 0.1ms id=forged"
CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


async def test_control_characters_in_a_path_cannot_forge_a_text_log_line(
    database_url: str, service_dir: Path
) -> None:
    service = start_service(database_url, service_dir, env={"DOCNUM_LOG_FORMAT": "text"})
    try:
        path = "/x" + quote(f"\n{FORGED}\r\x1b[2J\u2028{FORGED}", safe="")
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
            response = await client.get(path, headers={"X-Request-ID": "forging"})
        assert response.status_code == 404
        await eventually(lambda: "id=forging" in service.log.read_text(), "the request's line")
    finally:
        service.stop()
    lines = service.log.read_text().splitlines()
    [line] = [line for line in lines if "id=forging" in line]
    assert re.match(r"\d{4}-\d\d-\d\d [\d:,]+ INFO +docnum\.access: GET /x\\n2026-01-01 ", line)
    assert "\\r\\x1b[2J\\u2028" in line
    assert not [line for line in lines if line.startswith(FORGED[:23])]
    assert not CONTROLS.search(service.log.read_text())


EMIT_TRACEBACK = """
import logging
from app import logs
from app.settings import Settings
logs.configure(Settings(log_format="text"))
try:
    raise ValueError("bad path\\nFORGED")
except ValueError:
    logging.getLogger("docnum.example").exception("failed on\\r\\n%s", "/x\\nFORGED")
"""


def test_a_traceback_in_the_text_format_cannot_forge_a_line(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    with path.open("wb") as out:
        emit = EMIT_TRACEBACK.replace("FORGED", FORGED)
        subprocess.run([sys.executable, "-c", emit], stderr=out, check=True, timeout=30)
    first, *continued = path.read_text().splitlines()
    assert first.endswith(f"docnum.example: failed on\\r\\n/x\\n{FORGED}")
    assert continued[0] == "    Traceback (most recent call last):"
    assert continued[-2:] == ["    ValueError: bad path", f"    {FORGED}"]
    assert all(line.startswith("    ") for line in continued)


# Lines are written by a background writer: a blocked standard error holds up no answer, and no
# line of a failed request is lost, not under a burst and not at shutdown.

PIPE_BYTES = 4096  # the smallest pipe Linux makes: a few dozen lines fill it
BLOCKING_REQUESTS = 60  # lines of about 300 bytes: more than the pipe and one read can hold
BURST = 100
ANSWER_WITHIN = 10.0


class StandardError:
    """A service's standard error as a pipe of one page, drained by a thread while ``reading``
    is set. Cleared, the pipe fills after a few lines and every write to it blocks."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.received = bytearray()
        self.reading = threading.Event()
        self.reading.set()
        self.closed = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while self.reading.wait():
            chunk = os.read(self.read_end, 65536)
            if not chunk:
                self.closed.set()
                return
            self.received += chunk

    def lines(self) -> list[dict[str, Any]]:
        text = bytes(self.received).decode()
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]

    def access_lines(self) -> dict[str, dict[str, Any]]:
        """The request lines written so far, by request id."""
        return {
            line["request_id"]: line for line in self.lines() if line["logger"] == "docnum.access"
        }


@contextmanager
def service_with_a_pipe(
    database_url: str, service_dir: Path, **env: str
) -> Iterator[tuple[ServiceProcess, StandardError]]:
    stderr = StandardError()
    try:
        service = start_service(
            database_url,
            service_dir,
            env={"DOCNUM_LOG_FORMAT": "json", **env},
            output=stderr.write_end,
        )
    finally:
        os.close(stderr.write_end)  # the service holds the only write end: it ends with it
    try:
        yield service, stderr
    finally:
        stderr.reading.set()
        service.stop()
        stderr.closed.wait(LINES_WITHIN)
        os.close(stderr.read_end)


async def answered_while_blocked(
    service: ServiceProcess, stderr: StandardError, prefix: str
) -> list[str]:
    """Stop reading the service's standard error, then send requests one at a time, more than
    the pipe holds lines; every one must be answered. Returns their request ids."""
    stderr.reading.clear()
    request_ids = [f"{prefix}-{i}" for i in range(BLOCKING_REQUESTS)]
    async with httpx.AsyncClient(base_url=service.url, timeout=ANSWER_WITHIN) as client:
        for request_id in request_ids:
            response = await client.get("/healthz", headers={"X-Request-ID": request_id})
            assert response.status_code == 200, response.text
    return request_ids


async def test_requests_are_answered_while_standard_error_is_blocked_and_logged_once_it_drains(
    database_url: str, service_dir: Path
) -> None:
    with service_with_a_pipe(database_url, service_dir) as (service, stderr):
        # Writing on the request path would block the server at the first full pipe.
        request_ids = await answered_while_blocked(service, stderr, "blocked")
        stderr.reading.set()
        await eventually(
            lambda: set(request_ids) <= set(stderr.access_lines()), "every line is written"
        )


async def test_no_line_of_a_failed_request_is_lost_under_a_burst(
    database_url: str, service_dir: Path
) -> None:
    buffered = {"DOCNUM_LOG_BUFFER_LINES": "20"}
    with service_with_a_pipe(database_url, service_dir, **buffered) as (service, stderr):
        stderr.reading.clear()
        succeeded = [f"ok-{i}" for i in range(BURST)]
        failed = {
            f"failed-{i}": ("/series", 401) if i % 2 else ("/none", 404) for i in range(BURST)
        }
        async with httpx.AsyncClient(base_url=service.url, timeout=ANSWER_WITHIN) as client:

            async def status(path: str, request_id: str) -> int:
                response = await client.get(path, headers={"X-Request-ID": request_id})
                return response.status_code

            answered = await asyncio.gather(
                *(status("/healthz", request_id) for request_id in succeeded),
                *(status(path, request_id) for request_id, (path, _) in failed.items()),
            )
        assert answered == [200] * BURST + [expected for _, expected in failed.values()]
        stderr.reading.set()
        service.stop()
        assert stderr.closed.wait(LINES_WITHIN)

    written = stderr.access_lines()
    assert {i: written[i]["status"] for i in failed if i in written} == {
        request_id: expected for request_id, (_, expected) in failed.items()
    }
    dropped = sum(line["dropped"] for line in stderr.lines() if "dropped" in line)
    assert dropped > 0, "the burst stayed within the buffer"
    assert len([i for i in succeeded if i in written]) + dropped == BURST


async def test_lines_waiting_at_sigterm_are_written_before_the_process_exits(
    database_url: str, service_dir: Path
) -> None:
    with service_with_a_pipe(database_url, service_dir) as (service, stderr):
        request_ids = await answered_while_blocked(service, stderr, "waiting")
        service.process.send_signal(signal.SIGTERM)
        stderr.reading.set()
        assert service.process.wait(timeout=EXIT_WITHIN) == 0
        assert stderr.closed.wait(LINES_WITHIN)

    messages = [line.get("request_id") or line["message"] for line in stderr.lines()]
    shutdown = messages.index("Application shutdown complete.")
    assert set(request_ids) <= set(messages[:shutdown])


class ThreadsWriting(io.StringIO):
    """Standard error that remembers which threads wrote to it."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def write(self, text: str) -> int:
        self.threads.add(threading.current_thread().name)
        return super().write(text)


async def test_the_writer_thread_writes_every_line_before_the_lifespan_ends(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = ThreadsWriting()
    monkeypatch.setattr(sys, "stderr", stderr)
    application = create_app(settings.model_copy(update={"log_format": "json"}))
    request_ids = [f"in-process-{i}" for i in range(20)]
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://docnum.test") as client:
            for request_id in request_ids:
                response = await client.get("/healthz", headers={"X-Request-ID": request_id})
                assert response.status_code == 200
    # Read at once: the lifespan returned only after the writer wrote what was queued.
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert set(request_ids) <= {line.get("request_id") for line in lines}
    assert threading.current_thread().name not in stderr.threads, stderr.threads
