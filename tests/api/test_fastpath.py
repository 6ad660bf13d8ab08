"""The lean path (app.fastpath) serves every POST to next and batch, answers and refusals alike;
their FastAPI declarations only document them."""

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from app import fastpath
from app.main import create_app
from app.settings import Settings
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem

Handler = Callable[[Request], Awaitable[Response]]


@pytest.fixture
async def reached(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """A client of an app whose FastAPI route handlers record the route of each request they
    serve, and the list they record into."""
    served: list[str] = []
    build = APIRoute.get_route_handler

    def recording(route: APIRoute) -> Handler:
        handler: Handler = build(route)

        async def record(request: Request) -> Response:
            served.append(route.path)
            return await handler(request)

        return record

    monkeypatch.setattr(APIRoute, "get_route_handler", recording)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://docnum.test") as http:
            yield http, served


async def test_next_and_batch_never_reach_their_fastapi_declarations(
    reached: Any, tenant: Tenant, settings: Settings
) -> None:
    http, served = reached
    await create_series(http, tenant, "g", mode="gapless")
    await create_series(http, tenant, "c", mode="cached")
    key = {**tenant.issuer, "Idempotency-Key": "order-1"}
    typed = {**tenant.issuer, "content-type": "application/json"}
    answers = [
        (await http.post("/series/g/next", headers=tenant.issuer), 201),
        (await http.post("/series/c/next", json={"date": "2026-03-31"}, headers=key), 201),
        (await http.post("/series/c/next", json={"date": "2026-03-31"}, headers=key), 201),
        (await http.post("/series/g/batch", json={"count": 3}, headers=tenant.issuer), 201),
        (await http.post("/series/g/next"), 401),
        (await http.post("/series/g/batch", content=b'{"count":', headers=typed), 400),
        (await http.post("/series/g/batch", json={"count": 0}, headers=tenant.issuer), 422),
        (await http.post("/series/Bad/next", headers=tenant.issuer), 422),
        (await http.post("/series/none/next", headers=tenant.issuer), 404),
        (
            await http.post(
                "/series/g/batch", json={"count": settings.max_batch + 1}, headers=tenant.issuer
            ),
            422,
        ),
    ]
    assert [a.status_code for a, _ in answers] == [status for _, status in answers]
    assert answers[2][0].headers["Idempotent-Replayed"] == "true"
    assert answers[2][0].content == answers[1][0].content
    # The recording sees the routes FastAPI serves, so its silence about next and batch counts.
    assert (await http.get("/series/g/gaps", headers=tenant.issuer)).status_code == 200
    assert served == ["/series", "/series", "/series/{name}/gaps"]


async def test_a_streamed_body_past_the_limit_is_413_on_the_lean_path(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    await create_series(client, tenant, "s", mode="sequence")

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"count": 1, "variables": {"a": "'
        for _ in range(settings.max_body_bytes // 1024 + 1):
            yield b"x" * 1024
        yield b'"}}'

    response = await client.post(
        "/series/s/batch",
        content=chunks(),
        headers={**tenant.issuer, "content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload-too-large")
    assert response.headers["x-request-id"]
    counters = (await client.get("/series/s", headers=tenant.admin)).json()["counters"]
    assert counters == []


async def asgi_post(app: Any, path: str, headers: dict[str, str], body: bytes) -> list[str]:
    """POST through the app's ASGI interface as a server would; returns, for each message the app
    sent, the name of the function that called the server's ``send``."""
    callers: list[str] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("docnum.test", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        callers.append(sys._getframe(1).f_code.co_name)

    await app(scope, receive, send)
    return callers


async def test_the_lean_path_writes_to_the_servers_send_without_wrappers(
    app: Any, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "c", mode="cached")
    json = {**tenant.issuer, "content-type": "application/json"}
    for body in (b"{}", b'{"count": 0}'):  # an answer and a refusal
        callers = await asgi_post(app, "/series/c/next", json, body)
        assert callers == ["serve", "serve"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/series/inv/next", ("inv", "next")),
        ("/series/inv/batch", ("inv", "batch")),
        ("/series/a.b_c-d/next", ("a.b_c-d", "next")),
        ("/series//next", None),
        ("/series/a/b/next", None),
        ("/series/inv/next/", None),
        ("/series/inv/nextx", None),
        ("/series/inv/numbers", None),
        ("/series/next", None),
        ("/keys/next", None),
    ],
)
def test_the_lean_path_matches_exactly_the_paths_the_router_would(
    path: str, expected: tuple[str, str] | None
) -> None:
    assert fastpath.match(path) == expected
