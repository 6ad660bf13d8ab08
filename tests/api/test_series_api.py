"""Series administration over HTTP: create, list, read, change and archive, with every refusal."""

from typing import Any

import httpx
import pytest

from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem

MODES = ["gapless", "sequence", "cached"]
STRUCTURAL_CHANGES = {
    "mode": "cached",
    "reset": "yearly",
    "start": 100,
    "step": 2,
    "fiscal_year_start": 4,
}


async def issue_batch(
    client: httpx.AsyncClient, tenant: Tenant, name: str, count: int, date: str = "2026-05-01"
) -> list[int]:
    response = await client.post(
        f"/series/{name}/batch", json={"count": count, "date": date}, headers=tenant.issuer
    )
    assert response.status_code == 201, response.text
    values: list[int] = response.json()["values"]
    return values


async def list_all(client: httpx.AsyncClient, tenant: Tenant, **params: Any) -> list[str]:
    response = await client.get("/series", params=params, headers=tenant.admin)
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


# --- POST /series


async def test_create_returns_the_series_with_its_defaults(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(
        "/series", json={"name": "invoice", "format": "INV-{seq:06}"}, headers=tenant.admin
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body.pop("created_at") and body.pop("updated_at")
    assert [f.pop("set_at") for f in body["formats"]]
    assert body == {
        "name": "invoice",
        "format": "INV-{seq:06}",
        "mode": "gapless",
        "reset": "never",
        "start": 1,
        "step": 1,
        "max_value": None,
        "timezone": "UTC",
        "fiscal_year_start": 1,
        "block_size": 100,
        "ledger": True,
        "description": "",
        "shared_counter": False,
        "date_order": "off",
        "closed_through": None,
        "number_profile": None,
        "max_length": None,
        "allowed_characters": None,
        "warn_remaining": None,
        "archived": False,
        "formats": [{"format": "INV-{seq:06}", "effective_from": None}],
        "counters": [],
    }


async def test_create_keeps_every_field_given(client: httpx.AsyncClient, tenant: Tenant) -> None:
    fields: dict[str, Any] = {
        "format": "PO-{FY}-{seq:05}",
        "mode": "cached",
        "reset": "yearly",
        "start": 10,
        "step": 5,
        "max_value": 99_990,
        "timezone": "Europe/Berlin",
        "fiscal_year_start": 4,
        "block_size": 50,
        "ledger": True,
        "description": "Purchase orders",
    }
    created = await create_series(client, tenant, "po.eu-1", **fields)
    assert created["name"] == "po.eu-1"
    assert {k: created[k] for k in fields} == fields
    read = await client.get("/series/po.eu-1", headers=tenant.admin)
    assert {k: read.json()[k] for k in fields} == fields


@pytest.mark.parametrize(
    ("mode", "ledger"), [("gapless", True), ("sequence", False), ("cached", False)]
)
async def test_ledger_defaults_to_on_only_for_gapless(
    client: httpx.AsyncClient, tenant: Tenant, mode: str, ledger: bool
) -> None:
    assert (await create_series(client, tenant, "s", mode=mode))["ledger"] is ledger


@pytest.mark.parametrize("name", ["a", "0", "a" * 63, "inv_2026.eu-x"])
async def test_names_at_the_edges_of_the_pattern_are_accepted(
    client: httpx.AsyncClient, tenant: Tenant, name: str
) -> None:
    assert (await create_series(client, tenant, name))["name"] == name


async def test_a_name_taken_in_the_tenant_is_refused(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await create_series(client, tenant, "dup", format="A-{seq}")
    again = await client.post(
        "/series", json={"name": "dup", "format": "B-{seq}"}, headers=tenant.admin
    )
    assert "dup" in assert_problem(again, 409, "series-exists")["detail"]
    kept = await client.get("/series/dup", headers=tenant.admin)
    assert kept.json()["format"] == "A-{seq}"
    # Names belong to a tenant: another tenant may use the same one.
    await create_series(client, other_tenant, "dup", format="C-{seq}")


INVALID_FIELDS = [
    ({"name": "Invoice"}, "name"),
    ({"name": "-inv"}, "name"),
    ({"name": "_inv"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "a" * 64}, "name"),
    ({"name": "in v"}, "name"),
    ({"name": "inv/1"}, "name"),
    ({"name": 7}, "name"),
    ({"format": "INV-{nope}"}, "format"),
    ({"format": "INV-{seq"}, "format"),
    ({"format": "INV-}{seq}"}, "format"),
    ({"format": "INV-{YYYY}"}, "format"),
    ({"format": ""}, "format"),
    ({"format": "X-{seq}", "reset": "yearly"}, "format"),
    ({"mode": "fast"}, "mode"),
    ({"reset": "weekly"}, "reset"),
    ({"start": -1}, "start"),
    ({"start": "one"}, "start"),
    ({"start": 2**63}, "start"),
    ({"step": 0}, "step"),
    ({"step": -2}, "step"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"timezone": ""}, "timezone"),
    ({"fiscal_year_start": 0}, "fiscal_year_start"),
    ({"fiscal_year_start": 13}, "fiscal_year_start"),
    ({"block_size": 0}, "block_size"),
    ({"max_value": 9, "start": 10}, "max_value"),
    ({"max_value": 0, "start": 0}, "max_value"),
    ({"ledger": False}, "ledger"),
    ({"mode": "gapless", "ledger": False}, "ledger"),
    ({"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("fields", "field"), INVALID_FIELDS)
async def test_an_invalid_field_is_named_in_a_422(
    client: httpx.AsyncClient, tenant: Tenant, fields: dict[str, Any], field: str
) -> None:
    body = {"name": "bad", "format": "B-{seq}", **fields}
    response = await client.post("/series", json=body, headers=tenant.admin)
    problem = assert_problem(response, 422, "invalid-request")
    assert field in [error["field"] for error in problem["errors"]], problem
    assert (await client.get("/series", headers=tenant.admin)).json()["items"] == []


async def test_name_and_format_are_required(client: httpx.AsyncClient, tenant: Tenant) -> None:
    problem = assert_problem(
        await client.post("/series", json={}, headers=tenant.admin), 422, "invalid-request"
    )
    assert {error["field"] for error in problem["errors"]} == {"name", "format"}


# --- who may do what


async def test_changing_series_needs_an_admin_key(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "guarded")
    body = {"name": "other", "format": "O-{seq}"}
    assert_problem(await client.post("/series", json=body), 401, "unauthorized")
    assert_problem(await client.post("/series", json=body, headers=tenant.issuer), 403, "forbidden")
    patch = await client.patch("/series/guarded", json={"description": "x"}, headers=tenant.issuer)
    assert_problem(patch, 403, "forbidden")
    assert_problem(await client.delete("/series/guarded", headers=tenant.issuer), 403, "forbidden")
    # Reading needs any key of the tenant.
    assert_problem(await client.get("/series/guarded"), 401, "unauthorized")
    assert (await client.get("/series/guarded", headers=tenant.issuer)).status_code == 200
    assert await list_all(client, tenant) == ["guarded"]


# --- GET /series


async def test_listing_pages_through_every_series_by_name(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    names = ["e", "a", "d", "b", "c"]
    for name in names:
        await create_series(client, tenant, name)
    await create_series(client, other_tenant, "zzz")
    seen: list[str] = []
    pages = 0
    cursor = ""
    while True:
        response = await client.get(
            "/series", params={"limit": 2, "cursor": cursor}, headers=tenant.admin
        )
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        assert len(page["items"]) <= 2
        seen += [item["name"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == sorted(names)
    assert pages == 3
    assert await list_all(client, tenant, limit=5) == sorted(names)


async def test_listing_hides_archived_series_unless_asked(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "live")
    await create_series(client, tenant, "old")
    assert (await client.delete("/series/old", headers=tenant.admin)).status_code == 204
    assert await list_all(client, tenant) == ["live"]
    response = await client.get("/series", params={"archived": "true"}, headers=tenant.admin)
    assert {i["name"]: i["archived"] for i in response.json()["items"]} == {
        "live": False,
        "old": True,
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"archived": "maybe"}, "archived"),
        ({"cursor": "x" * 64}, "cursor"),
    ],
)
async def test_listing_refuses_bad_parameters(
    client: httpx.AsyncClient, tenant: Tenant, params: dict[str, Any], field: str
) -> None:
    response = await client.get("/series", params=params, headers=tenant.admin)
    problem = assert_problem(response, 422, "invalid-request")
    assert [error["field"] for error in problem["errors"]] == [f"query.{field}"]


# --- GET /series/{name}


@pytest.mark.parametrize("mode", MODES)
async def test_reading_shows_the_last_value_of_each_period(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "inv", format="I-{YYYY}-{seq}", mode=mode, reset="yearly")
    empty = await client.get("/series/inv", headers=tenant.issuer)
    assert empty.json()["counters"] == []
    assert await issue_batch(client, tenant, "inv", 3, "2026-02-01") == [1, 2, 3]
    assert await issue_batch(client, tenant, "inv", 2, "2025-12-31") == [1, 2]
    response = await client.get("/series/inv", headers=tenant.issuer)
    assert response.status_code == 200, response.text
    assert response.json()["counters"] == [
        {"period": "2025", "variables": {}, "last_value": 2},
        {"period": "2026", "variables": {}, "last_value": 3},
    ]


# --- PATCH /series/{name}


async def test_format_description_and_timezone_change_after_use(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "inv", format="A-{seq}")
    await issue_batch(client, tenant, "inv", 2)
    changes = {"format": "B-{seq:03}", "description": "renamed", "timezone": "Asia/Tokyo"}
    response = await client.patch("/series/inv", json=changes, headers=tenant.admin)
    assert response.status_code == 200, response.text
    changed = response.json()
    assert {k: changed[k] for k in changes} == changes
    assert changed["updated_at"] > changed["created_at"]
    assert changed["counters"] == [{"period": "all", "variables": {}, "last_value": 2}]
    issued = await client.post("/series/inv/next", headers=tenant.issuer)
    assert issued.json()["number"] == "B-003"


@pytest.mark.parametrize(("field", "value"), STRUCTURAL_CHANGES.items())
async def test_structural_fields_change_before_any_number(
    client: httpx.AsyncClient, tenant: Tenant, field: str, value: Any
) -> None:
    await create_series(client, tenant, "fresh", format="F-{FY}-{seq}", reset="never")
    response = await client.patch("/series/fresh", json={field: value}, headers=tenant.admin)
    assert response.status_code == 200, response.text
    assert response.json()[field] == value


@pytest.mark.parametrize(("field", "value"), STRUCTURAL_CHANGES.items())
async def test_structural_fields_are_frozen_once_numbers_were_issued(
    client: httpx.AsyncClient, tenant: Tenant, field: str, value: Any
) -> None:
    created = await create_series(client, tenant, "used", format="U-{FY}-{seq}")
    await issue_batch(client, tenant, "used", 1)
    response = await client.patch("/series/used", json={field: value}, headers=tenant.admin)
    assert field in assert_problem(response, 409, "series-in-use")["detail"]
    after = (await client.get("/series/used", headers=tenant.admin)).json()
    assert after[field] == created[field]
    # Sending the value it already has changes nothing, so it is not refused.
    same = await client.patch("/series/used", json={field: created[field]}, headers=tenant.admin)
    assert same.status_code == 200, same.text


@pytest.mark.parametrize("mode", ["sequence", "cached"])
async def test_becoming_gapless_turns_the_ledger_on(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    assert (await create_series(client, tenant, "g", mode=mode))["ledger"] is False
    response = await client.patch("/series/g", json={"mode": "gapless"}, headers=tenant.admin)
    assert response.status_code == 200, response.text
    assert (response.json()["mode"], response.json()["ledger"]) == ("gapless", True)
    refused = await client.patch(
        "/series/g", json={"mode": "gapless", "ledger": False}, headers=tenant.admin
    )
    assert_problem(refused, 422, "invalid-request")


@pytest.mark.parametrize("mode", MODES)
async def test_mode_is_frozen_once_numbers_were_issued_in_every_mode(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "m", mode=mode)
    await issue_batch(client, tenant, "m", 1)
    other = next(m for m in MODES if m != mode)
    response = await client.patch("/series/m", json={"mode": other}, headers=tenant.admin)
    assert_problem(response, 409, "series-in-use")


@pytest.mark.parametrize("mode", MODES)
async def test_max_value_cannot_drop_below_an_issued_value(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "cap", mode=mode, max_value=1000)
    await issue_batch(client, tenant, "cap", 5)
    response = await client.patch("/series/cap", json={"max_value": 4}, headers=tenant.admin)
    problem = assert_problem(response, 422, "invalid-request")
    assert [error["field"] for error in problem["errors"]] == ["max_value"]
    lowered = await client.patch("/series/cap", json={"max_value": 6}, headers=tenant.admin)
    assert lowered.status_code == 200, lowered.text
    assert await issue_batch(client, tenant, "cap", 1) == [6]
    exhausted = await client.post("/series/cap/next", headers=tenant.issuer)
    assert_problem(exhausted, 409, "series-exhausted")


@pytest.mark.parametrize("mode", MODES)
async def test_raising_max_value_lets_an_exhausted_series_go_on(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "grow", mode=mode, max_value=2, block_size=1)
    assert await issue_batch(client, tenant, "grow", 2) == [1, 2]
    assert_problem(
        await client.post("/series/grow/next", headers=tenant.issuer), 409, "series-exhausted"
    )
    raised = await client.patch("/series/grow", json={"max_value": 3}, headers=tenant.admin)
    assert raised.status_code == 200, raised.text
    assert await issue_batch(client, tenant, "grow", 1) == [3]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"format": "X-{nope}"}, "format"),
        ({"format": "no sequence"}, "format"),
        ({"timezone": "Nowhere/Town"}, "timezone"),
        ({"step": 0}, "step"),
        ({"colour": "red"}, "colour"),
        ({"mode": None}, "mode"),
        ({"format": None}, "format"),
        ({"start": None}, "start"),
        ({"max_value": 0}, "max_value"),
        ({"ledger": False}, "ledger"),
        ({"reset": "monthly"}, "format"),
    ],
)
async def test_an_invalid_change_is_named_in_a_422(
    client: httpx.AsyncClient, tenant: Tenant, patch: dict[str, Any], field: str
) -> None:
    before = await create_series(client, tenant, "p", format="P-{seq}")
    response = await client.patch("/series/p", json=patch, headers=tenant.admin)
    problem = assert_problem(response, 422, "invalid-request")
    assert field in [error["field"] for error in problem["errors"]], problem
    after = (await client.get("/series/p", headers=tenant.admin)).json()
    assert after | {"counters": []} == before


async def test_max_value_can_be_removed(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create_series(client, tenant, "cap", max_value=10)
    response = await client.patch("/series/cap", json={"max_value": None}, headers=tenant.admin)
    assert response.status_code == 200, response.text
    assert response.json()["max_value"] is None


# --- DELETE /series/{name}


@pytest.mark.parametrize("mode", MODES)
async def test_archiving_stops_issuing_and_keeps_the_ledger(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "arc", mode=mode, ledger=True)
    await issue_batch(client, tenant, "arc", 2)
    response = await client.delete("/series/arc", headers=tenant.admin)
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(
        await client.post("/series/arc/next", headers=tenant.issuer), 409, "series-archived"
    )
    batch = await client.post("/series/arc/batch", json={"count": 2}, headers=tenant.issuer)
    assert_problem(batch, 409, "series-archived")
    ledger = await client.get("/series/arc/numbers", headers=tenant.issuer)
    assert ledger.status_code == 200, ledger.text
    assert [entry["value"] for entry in ledger.json()["items"]] == [1, 2]
    read = await client.get("/series/arc", headers=tenant.issuer)
    assert read.json()["archived"] is True
    assert read.json()["counters"] == [{"period": "all", "variables": {}, "last_value": 2}]
    assert (await client.delete("/series/arc", headers=tenant.admin)).status_code == 204
    assert (await client.get("/series/arc", headers=tenant.admin)).json()["archived"] is True


# --- unknown series


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/series/ghost", None),
        ("PATCH", "/series/ghost", {"description": "x"}),
        ("DELETE", "/series/ghost", None),
        ("POST", "/series/ghost/next", None),
        ("POST", "/series/ghost/batch", {"count": 2}),
        ("GET", "/series/ghost/numbers", None),
    ],
)
async def test_an_unknown_series_is_404(
    client: httpx.AsyncClient,
    tenant: Tenant,
    other_tenant: Tenant,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    # A series of another tenant is as unknown as one that does not exist.
    await create_series(client, other_tenant, "ghost")
    response = await client.request(method, path, json=body, headers=tenant.admin)
    assert "ghost" in assert_problem(response, 404, "series-not-found")["detail"]


@pytest.mark.parametrize("name", ["a%00b", "x" * 300, "%C3%A9t%C3%A9", "a%20b", "Inv"])
async def test_a_name_that_cannot_exist_is_refused_in_a_422_not_a_500(
    client: httpx.AsyncClient, tenant: Tenant, name: str
) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        body = {"description": "x"} if method == "PATCH" else None
        response = await client.request(method, f"/series/{name}", json=body, headers=tenant.admin)
        problem = assert_problem(response, 422, "invalid-request")
        assert [error["field"] for error in problem["errors"]] == ["path.name"]
