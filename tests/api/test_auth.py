"""Who may call what: every route against every kind of caller, from one table.

A route needs a key of its tenant; ``issue`` keys issue numbers and read, ``admin`` keys do
everything in their tenant. Another tenant's resources do not exist for a caller: 404, never 403.
"""

from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest

from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem

Scope = Literal["issue", "admin"]
Caller = Literal["no key", "bad key", "revoked key", "issue key", "admin key", "other tenant"]
CALLERS: tuple[Caller, ...] = (
    "no key",
    "bad key",
    "revoked key",
    "issue key",
    "admin key",
    "other tenant",
)

SERIES = "matrix"
NUMBER = "M-1"
# Well formed, so it is refused for being unknown rather than for its shape.
UNKNOWN_KEY = "dn_00000000_" + "A" * 43


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {series}, {number}, {reservation} and {prefix} are filled in from the world below
    scope: Scope  # the least scope that may call it
    ok: int
    body: dict[str, Any] | None = None
    # True when the route names a resource of the tenant: another tenant gets a 404 for it.
    names_resource: bool = True
    not_found: str = "series-not-found"

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("GET", "/series", "issue", 200, names_resource=False),
    Route("POST", "/series", "admin", 201, {"name": "new", "format": "N-{seq}"}, False),
    Route("GET", "/series/{series}", "issue", 200),
    Route("PATCH", "/series/{series}", "admin", 200, {"description": "changed"}),
    Route("DELETE", "/series/{series}", "admin", 204),
    Route("POST", "/series/{series}/restore", "admin", 200),
    Route("POST", "/series/{series}/next", "issue", 201, {}),
    Route("POST", "/series/{series}/batch", "issue", 201, {"count": 2}),
    Route("GET", "/series/{series}/numbers", "issue", 200),
    Route("GET", "/series/{series}/numbers/{number}", "issue", 200),
    Route("POST", "/series/{series}/numbers/{number}/void", "admin", 200, {"reason": "typo"}),
    Route("PATCH", "/series/{series}/numbers/{number}", "issue", 200, {"document_ref": "SO-1"}),
    Route(
        "POST", "/series/{series}/numbers", "admin", 201, {"number": "M-5", "date": "2026-01-01"}
    ),
    Route(
        "PUT", "/series/{series}/counters/{period}", "admin", 200, {"last_value": 9, "reason": "go"}
    ),
    Route("GET", "/series/{series}/next-preview", "issue", 200),
    Route("GET", "/series/{series}/gaps", "issue", 200),
    Route("POST", "/series/{series}/reservations", "issue", 201, {}),
    Route("GET", "/series/{series}/reservations/{reservation}", "issue", 200),
    Route("POST", "/series/{series}/reservations/{reservation}/confirm", "issue", 200, {}),
    Route("DELETE", "/series/{series}/reservations/{reservation}", "issue", 200),
    Route("GET", "/series/{series}/verify", "issue", 200),
    Route("GET", "/series/{series}/export", "admin", 200),
    Route("GET", "/keys", "admin", 200, names_resource=False),
    Route("POST", "/keys", "admin", 201, {"scope": "issue"}, False),
    Route("DELETE", "/keys/{prefix}", "admin", 200, not_found="key-not-found"),
    Route("GET", "/audit", "admin", 200, names_resource=False),
]
PUBLIC_PATHS = ("/healthz", "/readyz", "/openapi.json", "/docs", "/redoc")
# Built and tested elsewhere: the metrics endpoint, the admin portal (cookie sessions) and the
# public pages of the problem types.
ELSEWHERE = ("/metrics", "/admin", "/problems")


def expected_status(route: Route, caller: Caller) -> int:
    if caller in ("no key", "bad key", "revoked key"):
        return 401
    if caller == "issue key" and route.scope == "admin":
        return 403
    if caller == "other tenant" and route.names_resource:
        return 404
    return route.ok


@dataclass(frozen=True)
class World:
    """A tenant with a series, one issued number, one reservation and a spare key, plus keys of
    every kind."""

    tenant: Tenant
    spare_prefix: str
    reservation: str
    headers: dict[Caller, dict[str, str]]


async def build_world(client: httpx.AsyncClient, tenant: Tenant, other: Tenant) -> World:
    await create_series(client, tenant, SERIES, format="M-{seq}")
    issued = await client.post(f"/series/{SERIES}/next", headers=tenant.issuer)
    assert issued.json()["number"] == NUMBER
    reserved = await client.post(f"/series/{SERIES}/reservations", headers=tenant.issuer)
    assert reserved.status_code == 201, reserved.text
    spare = await client.post("/keys", json={"name": "spare"}, headers=tenant.admin)
    revoked = await client.post("/keys", json={"scope": "admin"}, headers=tenant.admin)
    gone = await client.delete(f"/keys/{revoked.json()['prefix']}", headers=tenant.admin)
    assert gone.status_code == 200, gone.text
    return World(
        tenant=tenant,
        spare_prefix=spare.json()["prefix"],
        reservation=reserved.json()["id"],
        headers={
            "no key": {},
            "bad key": {"Authorization": f"Bearer {UNKNOWN_KEY}"},
            "revoked key": {"Authorization": f"Bearer {revoked.json()['key']}"},
            "issue key": tenant.issuer,
            "admin key": tenant.admin,
            "other tenant": other.admin,
        },
    )


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_route_answers_each_caller_as_its_scope_and_tenant_require(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, route: Route, caller: Caller
) -> None:
    world = await build_world(client, tenant, other_tenant)
    path = route.path.format(
        series=SERIES,
        number=NUMBER,
        prefix=world.spare_prefix,
        period="all",
        reservation=world.reservation,
    )
    response = await client.request(
        route.method, path, json=route.body, headers=world.headers[caller]
    )
    status = expected_status(route, caller)
    if status == 401:
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    elif status == 403:
        assert_problem(response, 403, "forbidden")
    elif status == 404:
        assert_problem(response, 404, route.not_found)
    else:
        assert response.status_code == status, response.text


async def test_the_table_covers_every_route_behind_a_key(app: Any) -> None:
    """A new route must get a row above; a removed one must lose its row."""
    served = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path not in PUBLIC_PATHS and not path.startswith(ELSEWHERE)
        for method in operations
    }
    listed = {
        (
            r.method,
            r.path.replace("{series}", "{name}").replace("{reservation}", "{reservation_id}"),
        )
        for r in ROUTES
    }
    assert served == listed


@pytest.mark.parametrize("path", PUBLIC_PATHS)
async def test_public_endpoints_need_no_key(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "Bearer not-a-key",
        f"Bearer {UNKNOWN_KEY}x",
        "Token dn_00000000_" + "A" * 43,
    ],
)
async def test_malformed_credentials_are_401_with_a_bearer_challenge(
    client: httpx.AsyncClient, authorization: str
) -> None:
    response = await client.get("/series", headers={"Authorization": authorization})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_known_prefix_with_a_wrong_secret_is_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    prefix = tenant.admin_key.split("_")[1]
    forged = f"dn_{prefix}_" + "B" * 43
    assert forged != tenant.admin_key
    response = await client.get("/series", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "unauthorized")


async def test_the_scheme_name_is_case_insensitive(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.get("/series", headers={"Authorization": f"bearer {tenant.issue_key}"})
    assert response.status_code == 200, response.text


async def test_a_tenant_sees_only_its_own_series_and_keys(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await create_series(client, tenant, "mine")
    await create_series(client, other_tenant, "theirs")
    listed = await client.get("/series", headers=tenant.issuer)
    assert [s["name"] for s in listed.json()["items"]] == ["mine"]
    keys = await client.get("/keys", params={"revoked": "true"}, headers=tenant.admin)
    own = {tenant.admin_key.split("_")[1], tenant.issue_key.split("_")[1]}
    assert {k["prefix"] for k in keys.json()["items"]} == own


async def test_same_series_name_in_two_tenants_stays_separate(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await create_series(client, tenant, "inv", format="A-{seq}")
    await create_series(client, other_tenant, "inv", format="B-{seq}")
    mine = await client.post("/series/inv/next", headers=tenant.issuer)
    theirs = await client.post("/series/inv/next", headers=other_tenant.issuer)
    assert (mine.json()["number"], theirs.json()["number"]) == ("A-1", "B-1")


async def test_an_issue_key_cannot_create_keys_of_any_scope(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for scope in ("issue", "admin"):
        response = await client.post("/keys", json={"scope": scope}, headers=tenant.issuer)
        assert_problem(response, 403, "forbidden")
