"""Hostile and malformed input gets a precise 4xx problem, never a 500, and never reaches SQL
as anything but a bound value."""

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from app.settings import Settings
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem

JSON = {"content-type": "application/json"}
NUL = "\x00"
INJECTION = "x'); DROP TABLE series; --"


def cursor_of(value: Any) -> str:
    """A ledger cursor as the service writes one, around any JSON value."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.fixture
async def series(client: httpx.AsyncClient, tenant: Tenant) -> str:
    """A gapless series with three numbers issued: S-1, S-2 and S-3."""
    await create_series(client, tenant, "s", format="S-{seq}")
    for _ in range(3):
        assert (await client.post("/series/s/next", headers=tenant.issuer)).status_code == 201
    return "s"


# --- size, media type and syntax of the body -------------------------------------------------


async def test_a_body_declared_too_large_is_413(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    body = json.dumps({"name": "big", "format": "B-{seq}", "description": "x" * 100})
    padded = body.encode() + b" " * settings.max_body_bytes
    response = await client.post("/series", content=padded, headers={**tenant.admin, **JSON})
    assert_problem(response, 413, "payload-too-large")


async def test_a_streamed_body_growing_too_large_is_413(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "big", "format": "B-{seq}", "description": "'
        for _ in range(settings.max_body_bytes // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    response = await client.post("/series", content=chunks(), headers={**tenant.admin, **JSON})
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload-too-large")
    missing = await client.get("/series/big", headers=tenant.admin)
    assert_problem(missing, 404, "series-not-found")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/series"), ("PATCH", "/series/s"), ("POST", "/series/s/next"), ("POST", "/keys")],
)
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient,
    tenant: Tenant,
    series: str,
    content_type: str,
    method: str,
    path: str,
) -> None:
    headers = {**tenant.admin, "content-type": content_type}
    response = await client.request(method, path, content=b'{"a": 1}', headers=headers)
    assert_problem(response, 415, "unsupported-media-type")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "x", "format": "X-{seq}"',
        b'{"name": "x",}',
        b"{'name': 'x'}",
        b'{"name": "\xff"}',
        b"[" * 10_000,
        b'{"count": ' + b"9" * 5_000 + b"}",
    ],
    ids=["truncated", "trailing comma", "single quotes", "not utf-8", "deep nesting", "huge int"],
)
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, tenant: Tenant, series: str, raw: bytes
) -> None:
    for path in ("/series", f"/series/{series}/batch"):
        response = await client.post(path, content=raw, headers={**tenant.admin, **JSON})
        assert_problem(response, 400, "malformed-request")


@pytest.mark.parametrize(
    ("method", "path", "body", "unknown"),
    [
        ("POST", "/series", {"name": "x", "format": "X-{seq}", "owner": "me"}, "owner"),
        ("PATCH", "/series/s", {"tenant_id": 1}, "tenant_id"),
        ("POST", "/series/s/next", {"count": 2}, "count"),
        ("POST", "/series/s/batch", {"count": 2, "value": 7}, "value"),
        ("POST", "/series/s/numbers/S-1/void", {"reason": "x", "status": "issued"}, "status"),
        ("POST", "/keys", {"scope": "issue", "tenant": "other"}, "tenant"),
    ],
    ids=["series", "update", "next", "batch", "void", "key"],
)
async def test_unknown_fields_are_422_naming_the_field(
    client: httpx.AsyncClient,
    tenant: Tenant,
    series: str,
    method: str,
    path: str,
    body: dict[str, Any],
    unknown: str,
) -> None:
    response = await client.request(method, path, json=body, headers=tenant.admin)
    problem = assert_problem(response, 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == [unknown]


@pytest.mark.parametrize("body", [[], "x", 1, None], ids=["array", "string", "number", "null"])
async def test_a_body_that_is_not_an_object_is_422(
    client: httpx.AsyncClient, tenant: Tenant, body: Any
) -> None:
    response = await client.post("/series", json=body, headers=tenant.admin)
    assert_problem(response, 422, "invalid-request")


# --- names, templates, variables and free text ---------------------------------------------

BAD_SERIES_NAMES = ["", "x" * 64, "Upper", ".dot", "-dash", "sp ace", "ünï", "a/b", INJECTION]


@pytest.mark.parametrize("name", BAD_SERIES_NAMES)
async def test_a_series_name_outside_its_alphabet_is_422(
    client: httpx.AsyncClient, tenant: Tenant, name: str
) -> None:
    body = {"name": name, "format": "X-{seq}"}
    assert_problem(
        await client.post("/series", json=body, headers=tenant.admin), 422, "invalid-request"
    )


@pytest.mark.parametrize(
    "name", ["x" * 64, "Upper", ".dot", "a%00b", "%E2%80%AE", "a%20b", "x'%3B--"]
)
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/next"), ("GET", "/numbers")],
)
async def test_a_series_name_in_the_path_outside_its_alphabet_is_422(
    client: httpx.AsyncClient, tenant: Tenant, name: str, method: str, suffix: str
) -> None:
    response = await client.request(
        method, f"/series/{name}{suffix}", json={}, headers=tenant.admin
    )
    assert_problem(response, 422, "invalid-request")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", "X" * 201),
        ("format", "X-{seq}\n"),
        ("format", f"X{NUL}-{{seq}}"),
        ("format", "X-{seq}\u2028"),
        ("format", "X-{sql}"),
        ("format", "X-{seq"),
        ("description", "x" * 1001),
        ("description", f"x{NUL}"),
        ("description", "bell\a"),
        ("timezone", "Mars/Olympus"),
        ("timezone", f"Europe/Paris{NUL}"),
        ("timezone", "x" * 65),
        ("mode", "fast"),
        ("start", -1),
        ("start", 2**63),
        ("step", 0),
        ("max_value", 2**64),
        ("block_size", 100_001),
        ("fiscal_year_start", 13),
        ("ledger", "maybe"),
    ],
)
async def test_series_fields_are_validated(
    client: httpx.AsyncClient, tenant: Tenant, field: str, value: Any
) -> None:
    body = {"name": "v", "format": "X-{seq}", field: value}
    problem = assert_problem(
        await client.post("/series", json=body, headers=tenant.admin), 422, "invalid-request"
    )
    assert [e["field"] for e in problem["errors"]] == [field]


@pytest.mark.parametrize(
    "patch",
    [{"format": None}, {"mode": None}, {"description": None}, {"description": NUL}],
    ids=["null format", "null mode", "null description", "nul description"],
)
async def test_a_series_update_is_validated(
    client: httpx.AsyncClient, tenant: Tenant, series: str, patch: dict[str, Any]
) -> None:
    response = await client.patch(f"/series/{series}", json=patch, headers=tenant.admin)
    problem = assert_problem(response, 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == list(patch)


async def test_null_clears_max_value(
    client: httpx.AsyncClient, tenant: Tenant, series: str
) -> None:
    limited = await client.patch(f"/series/{series}", json={"max_value": 10}, headers=tenant.admin)
    assert limited.json()["max_value"] == 10
    cleared = await client.patch(
        f"/series/{series}", json={"max_value": None}, headers=tenant.admin
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["max_value"] is None


@pytest.mark.parametrize(
    "variables",
    [
        {"dept": ""},
        {"dept": "x" * 33},
        {"dept": "a b"},
        {"dept": "{seq}"},
        {"dept": NUL},
        {"dept": "é"},
        {"bad name": "A"},
        {"dept": 1},
    ],
)
async def test_variables_outside_their_alphabet_are_422(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, variables: dict[str, Any]
) -> None:
    await create_series(client, tenant, "v", format="{var:dept}-{seq}")
    response = await client.post(
        "/series/v/next", json={"variables": variables}, headers=tenant.issuer
    )
    assert_problem(response, 422, "invalid-request")
    assert (await client.get("/series/v", headers=tenant.admin)).json()["counters"] == []


@pytest.mark.parametrize(
    ("number", "reason"),
    [("S-1", ""), ("S-1", "x" * 501), ("S-1", f"typo{NUL}"), ("S%001", "typo"), ("S" * 65, "x")],
    ids=["empty reason", "long reason", "nul reason", "nul number", "long number"],
)
async def test_void_input_is_validated(
    client: httpx.AsyncClient, tenant: Tenant, series: str, number: str, reason: str
) -> None:
    response = await client.post(
        f"/series/{series}/numbers/{number}/void", json={"reason": reason}, headers=tenant.admin
    )
    assert_problem(response, 422, "invalid-request")


async def test_text_that_looks_like_sql_is_stored_as_text(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    made = await create_series(
        client,
        tenant,
        "sql",
        format="X'--\"{seq}",
        description=f"{INJECTION}\nsecond line\tand a tab",
    )
    assert made["description"] == f"{INJECTION}\nsecond line\tand a tab"
    issued = await client.post("/series/sql/next", headers=tenant.issuer)
    assert issued.json()["number"] == "X'--\"1"
    voided = await client.post(
        "/series/sql/numbers/X'--\"1/void", json={"reason": INJECTION}, headers=tenant.admin
    )
    assert voided.json()["void_reason"] == INJECTION
    assert await pool.fetchval("SELECT to_regclass('series') IS NOT NULL")


# --- counts, page sizes and cursors --------------------------------------------------------


@pytest.mark.parametrize("count", [0, -1, 1.5, "two", [2], None, 2**70])
async def test_a_batch_count_outside_its_bounds_is_422(
    client: httpx.AsyncClient, tenant: Tenant, series: str, count: Any
) -> None:
    response = await client.post(
        f"/series/{series}/batch", json={"count": count}, headers=tenant.issuer
    )
    assert_problem(response, 422, "invalid-request")


async def test_a_batch_count_is_bounded_by_max_batch(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    await create_series(client, tenant, "b", mode="sequence")
    over = await client.post(
        "/series/b/batch", json={"count": settings.max_batch + 1}, headers=tenant.issuer
    )
    problem = assert_problem(over, 422, "invalid-request")
    assert problem["errors"] == [
        {"field": "count", "message": f"must be at most {settings.max_batch}"}
    ]
    full = await client.post(
        "/series/b/batch", json={"count": settings.max_batch}, headers=tenant.issuer
    )
    assert full.status_code == 201 and full.json()["count"] == settings.max_batch


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/series", {"limit": "0"}),
        ("/series", {"limit": "501"}),
        ("/series", {"limit": "ten"}),
        ("/series", {"cursor": "Upper"}),
        ("/series", {"cursor": NUL}),
        ("/series", {"archived": "maybe"}),
        ("/series/s/numbers", {"limit": "0"}),
        ("/series/s/numbers", {"limit": "1001"}),
        ("/series/s/numbers", {"limit": str(2**70)}),
        ("/series/s/numbers", {"status": "deleted"}),
        ("/series/s/numbers", {"period": "2026-13-01-x"}),
        ("/series/s/numbers", {"period": f"all{NUL}"}),
        ("/series/s/gaps", {"period": "last"}),
        ("/keys", {"revoked": "perhaps"}),
    ],
)
async def test_query_parameters_outside_their_bounds_are_422(
    client: httpx.AsyncClient, tenant: Tenant, series: str, path: str, params: dict[str, str]
) -> None:
    response = await client.get(path, params=params, headers=tenant.admin)
    assert_problem(response, 422, "invalid-request")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "x" * 201,
        "not-base64-at-all",
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
        cursor_of({"period": "all", "value": 1}),
        cursor_of(["all"]),
        cursor_of(["all", 1, 2]),
        cursor_of("all"),
        cursor_of(["all", "1"]),
        cursor_of(["all", 1.5]),
        cursor_of(["all", True]),
        cursor_of(["all", 2**63]),
        cursor_of(["all", -(2**63) - 1]),
        cursor_of([NUL, 1]),
        cursor_of(["x" * 17, 1]),
        cursor_of(["'; --", 1]),
        cursor_of([None, 1]),
    ],
)
async def test_a_garbage_or_tampered_ledger_cursor_is_422(
    client: httpx.AsyncClient, tenant: Tenant, series: str, cursor: str
) -> None:
    response = await client.get(
        f"/series/{series}/numbers", params={"cursor": cursor}, headers=tenant.issuer
    )
    assert_problem(response, 422, "invalid-request")


async def test_ledger_cursors_page_through_every_number_once(
    client: httpx.AsyncClient, tenant: Tenant, series: str
) -> None:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await client.get(f"/series/{series}/numbers", params=params, headers=tenant.issuer)
        assert page.status_code == 200, page.text
        seen += [item["number"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ["S-1", "S-2", "S-3"]


# --- headers -------------------------------------------------------------------------------


async def test_an_oversized_authorization_header_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/series", headers={"Authorization": "Bearer " + "x" * 8000})
    assert_problem(response, 401, "unauthorized")


async def test_unknown_routes_are_404_problems(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert_problem(await client.get("/nowhere", headers=tenant.admin), 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/series", "GET, POST"),
        ("PUT", "/series/s", "GET, PATCH, DELETE"),
        ("GET", "/series/s/next", "POST"),
        ("POST", "/keys/0000abcd", "DELETE"),
    ],
)
async def test_a_wrong_method_is_405_listing_every_allowed_one(
    client: httpx.AsyncClient, tenant: Tenant, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path, headers=tenant.admin)
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == allow
