"""Logs: one structured line per request, request ids echoed and attached, one format per output."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support import ServiceProcess, Tenant, create_series, start_service

GENERATED_ID = re.compile(r"^[0-9a-f]{16}$")
LINES_WITHIN = 10.0

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
