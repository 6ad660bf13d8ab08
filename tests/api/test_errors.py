"""Every error is an RFC 9457 problem: routing, body and media-type refusals, and the unexpected."""

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app import problems
from app.main import create_app
from app.settings import Settings
from harness.tenants import Tenant
from tests.support.api import assert_problem

SECRET = "the connection string is postgresql://admin:hunter2@db"


async def test_an_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/no/such/route"), 404, "not-found")
    assert body["instance"] == "/no/such/route"


async def test_a_wrong_method_is_a_405_problem_that_names_the_allowed_ones(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.put("/series", json={}, headers=tenant.admin)
    assert_problem(response, 405, "method-not-allowed")
    assert "POST" in response.headers["allow"].replace(" ", "").split(",")


@pytest.mark.parametrize("content", [b'{"name": "x", "format":', b"not json", b"\xff\xfe"])
async def test_malformed_json_is_a_400_problem(
    client: httpx.AsyncClient, tenant: Tenant, content: bytes
) -> None:
    headers = {**tenant.admin, "Content-Type": "application/json"}
    response = await client.post("/series", content=content, headers=headers)
    assert_problem(response, 400, "malformed-request")


async def test_a_json_body_that_is_not_an_object_is_a_422(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post("/series", json=["invoice"], headers=tenant.admin)
    assert_problem(response, 422, "invalid-request")


def oversized_body(settings: Settings) -> bytes:
    return (
        b'{"name": "big", "format": "B-{seq}", "description": "'
        + b"x" * (settings.max_body_bytes)
        + b'"}'
    )


async def test_a_body_declared_too_large_is_a_413_problem(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    headers = {**tenant.admin, "Content-Type": "application/json"}
    response = await client.post("/series", content=oversized_body(settings), headers=headers)
    assert "content-length" in response.request.headers
    assert_problem(response, 413, "payload-too-large")


async def test_a_chunked_body_too_large_is_a_413_problem(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    body = oversized_body(settings)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    headers = {**tenant.admin, "Content-Type": "application/json"}
    response = await client.post("/series", content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413, "payload-too-large")
    missing = await client.get("/series/big", headers=tenant.admin)
    assert_problem(missing, 404, "series-not-found")


async def test_a_chunked_body_within_the_limit_is_served(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "chunked",'
        yield b' "format": "C-{seq}"}'

    headers = {**tenant.admin, "Content-Type": "application/json"}
    response = await client.post("/series", content=chunks(), headers=headers)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "text/x+json", None],
)
async def test_a_body_that_is_not_json_is_a_415_problem(
    client: httpx.AsyncClient, tenant: Tenant, content_type: str | None
) -> None:
    headers = dict(tenant.admin)
    if content_type is not None:
        headers["Content-Type"] = content_type
    content = b'{"name": "typed", "format": "T-{seq}"}'
    response = await client.post("/series", content=content, headers=headers)
    assert_problem(response, 415, "unsupported-media-type")


async def test_json_with_a_charset_or_a_json_suffix_is_accepted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    accepted = [("a", "application/json; charset=utf-8"), ("b", "application/vnd.docnum+json")]
    for name, content_type in accepted:
        content = f'{{"name": "{name}", "format": "T-{{seq}}"}}'.encode()
        headers = {**tenant.admin, "Content-Type": content_type}
        response = await client.post("/series", content=content, headers=headers)
        assert response.status_code == 201, response.text


async def test_text_the_database_cannot_store_is_a_422_not_a_500(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = {"name": "nul", "format": "N-{seq}", "description": "a\u0000b"}
    response = await client.post("/series", json=body, headers=tenant.admin)
    assert_problem(response, 422, "invalid-request")


@pytest.fixture
def failing_app(settings: Settings) -> Iterator[FastAPI]:
    """The real app with one more route that fails the way a bug would."""
    app = create_app(settings)

    @app.get("/fails")
    async def fails() -> None:
        raise RuntimeError(SECRET)

    yield app


async def test_an_unexpected_error_is_a_500_problem_without_internals(
    failing_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    # As a server does: the exception is answered, then re-raised for the server to log.
    transport = httpx.ASGITransport(app=failing_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://docnum.test") as client:
        response = await client.get("/fails")
    body = assert_problem(response, 500, "internal-error")
    assert set(body) == {"type", "title", "status", "detail", "instance"}
    for leak in ("hunter2", "RuntimeError", "postgresql://", "File "):
        assert leak not in response.text
    # The details go to the log, for the operator.
    assert any(SECRET in str(record.exc_info) for record in caplog.records if record.exc_info)


# What answers over HTTP or talks to the database: the problems are raised without either.
EDGE_PACKAGES = {"fastapi", "starlette", "uvicorn", "asyncpg"}


def test_the_problem_classes_load_no_web_framework_and_no_database_driver() -> None:
    # A fresh interpreter: this one has loaded everything already.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, app.problems; print(*sys.modules, sep='\\n')"],
        cwd=Path(problems.__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert "app.problems" in loaded
    assert {name.partition(".")[0] for name in loaded} & EDGE_PACKAGES == set()
