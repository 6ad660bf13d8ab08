"""The audit trail: one row per administrative change, in the change's own transaction, none
for a change that fails; and GET /audit, which shows a tenant its own trail and nothing else.
"""

import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from app import cursors
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem


def actor_of(tenant: Tenant) -> str:
    return f"key {tenant.admin_key.split('_')[1]} (test admin)"


async def trail(client: httpx.AsyncClient, tenant: Tenant, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/audit", params={"limit": 500, **params}, headers=tenant.admin)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def only_new_row(
    client: httpx.AsyncClient, tenant: Tenant, before: list[dict[str, Any]]
) -> dict[str, Any]:
    after = await trail(client, tenant)
    assert after[len(after) - len(before) :] == before, "older rows never change"
    added = after[: len(after) - len(before)]
    assert len(added) == 1, added
    return added[0]


async def test_each_change_writes_exactly_one_row(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    async def one(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        before = await trail(client, tenant)
        response = await client.request(method, path, json=body, headers=tenant.admin)
        assert response.status_code < 300, response.text
        return await only_new_row(client, tenant, before)

    created = await one("POST", "/series", {"name": "au", "format": "AU-{seq}"})
    assert created["action"] == "series.created" and created["series"] == "au"
    assert created["details"]["format"] == "AU-{seq}" and created["details"]["mode"] == "gapless"

    changed = await one("PATCH", "/series/au", {"format": "AU-{seq:03}", "description": "d"})
    assert changed["action"] == "series.changed"
    assert changed["details"] == {
        "format": {"old": "AU-{seq}", "new": "AU-{seq:03}"},
        "description": {"old": "", "new": "d"},
    }

    issued = await client.post("/series/au/next", headers=tenant.issuer)
    number = issued.json()["number"]
    voided = await one("POST", f"/series/au/numbers/{number}/void", {"reason": "cancelled"})
    assert voided["action"] == "number.voided" and voided["series"] == "au"
    assert voided["details"] == {"number": number, "reason": "cancelled"}

    archived = await one("DELETE", "/series/au")
    assert (archived["action"], archived["series"], archived["details"]) == (
        "series.archived",
        "au",
        {},
    )

    key = await one("POST", "/keys", {"scope": "issue", "name": "robot"})
    assert key["action"] == "key.created" and key["series"] is None
    prefix = key["details"]["prefix"]
    assert key["details"] == {"prefix": prefix, "scope": "issue", "name": "robot"}

    revoked = await one("DELETE", f"/keys/{prefix}")
    assert revoked["action"] == "key.revoked"
    assert revoked["details"] == {"prefix": prefix, "name": "robot"}

    rows = [created, changed, voided, archived, key, revoked]
    assert {row["actor"] for row in rows} == {actor_of(tenant)}
    now = datetime.datetime.now(datetime.UTC)
    for row in rows:
        at = datetime.datetime.fromisoformat(row["at"])
        assert now - datetime.timedelta(minutes=5) < at <= now
    stored = await pool.fetch(
        "SELECT DISTINCT tenant_id FROM audit_log WHERE id = ANY($1::bigint[])",
        [row["id"] for row in rows],
    )
    assert [r["tenant_id"] for r in stored] == [tenant.id]


async def test_rows_share_the_time_of_their_change_so_the_same_transaction(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """now() is fixed within a transaction: equal times mean change and row committed as one."""
    await create_series(client, tenant, "tx")
    await client.patch("/series/tx", json={"description": "x"}, headers=tenant.admin)
    issued = await client.post("/series/tx/next", headers=tenant.issuer)
    number = issued.json()["number"]
    await client.post(
        f"/series/tx/numbers/{number}/void", json={"reason": "r"}, headers=tenant.admin
    )
    key = await client.post("/keys", json={"name": "k"}, headers=tenant.admin)
    rows = {r["action"]: r for r in await trail(client, tenant, series="tx")}
    series = await pool.fetchrow(
        "SELECT created_at, updated_at, id FROM series WHERE tenant_id = $1 AND name = 'tx'",
        tenant.id,
    )
    voided_at = await pool.fetchval(
        "SELECT voided_at FROM numbers WHERE series_id = $1 AND number = $2", series["id"], number
    )
    key_created = await pool.fetchval(
        "SELECT created_at FROM api_keys WHERE prefix = $1", key.json()["prefix"]
    )
    key_row = (await trail(client, tenant, action="key.created"))[0]

    def at(row: dict[str, Any]) -> datetime.datetime:
        return datetime.datetime.fromisoformat(row["at"])

    assert at(rows["series.created"]) == series["created_at"]
    assert at(rows["series.changed"]) == series["updated_at"]
    assert at(rows["number.voided"]) == voided_at
    assert at(key_row) == key_created


async def test_a_change_that_fails_or_changes_nothing_writes_no_row(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "used", format="U-{seq}")
    await create_series(client, tenant, "fast", format="F-{seq}", mode="sequence", ledger=True)
    issued = await client.post("/series/used/next", headers=tenant.issuer)
    fast = await client.post("/series/fast/next", headers=tenant.issuer)
    number = issued.json()["number"]
    await client.post(
        f"/series/used/numbers/{number}/void", json={"reason": "r"}, headers=tenant.admin
    )
    key = await client.post("/keys", json={"name": "gone"}, headers=tenant.admin)
    await client.delete(f"/keys/{key.json()['prefix']}", headers=tenant.admin)
    await client.delete("/series/fast", headers=tenant.admin)
    before = await trail(client, tenant)

    refused = [
        ("PATCH", "/series/used", {"mode": "cached"}, 409),
        ("PATCH", "/series/used", {"format": "U"}, 422),
        ("PATCH", "/series/used", {"reset": "yearly"}, 422),
        ("PATCH", "/series/missing", {"description": "x"}, 404),
        ("POST", "/series", {"name": "used", "format": "U-{seq}"}, 409),
        ("POST", "/series", {"name": "new", "format": "{YYYY}-{seq}", "reset": "monthly"}, 422),
        ("POST", f"/series/used/numbers/{number}/void", {"reason": "again"}, 409),
        ("POST", "/series/used/numbers/U-999/void", {"reason": "r"}, 404),
        ("POST", f"/series/fast/numbers/{fast.json()['number']}/void", {"reason": "r"}, 409),
        ("DELETE", "/keys/00000000", None, 404),
        ("DELETE", "/series/missing", None, 404),
    ]
    for method, path, body, status in refused:
        response = await client.request(method, path, json=body, headers=tenant.admin)
        assert response.status_code == status, (method, path, response.text)
    unchanged = [
        ("PATCH", "/series/used", {"format": "U-{seq}", "description": ""}),
        ("PATCH", "/series/used", {}),
        ("DELETE", f"/keys/{key.json()['prefix']}", None),
        ("DELETE", "/series/fast", None),
    ]
    for method, path, body in unchanged:
        response = await client.request(method, path, json=body, headers=tenant.admin)
        assert response.status_code < 300, (method, path, response.text)
    assert await trail(client, tenant) == before


async def test_filters_and_keyset_paging(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for name in ("f1", "f2", "f3"):
        await create_series(client, tenant, name)
        await client.patch(f"/series/{name}", json={"description": name}, headers=tenant.admin)
    await client.delete("/series/f2", headers=tenant.admin)
    everything = await trail(client, tenant)
    ids = [row["id"] for row in everything]
    assert ids == sorted(ids, reverse=True), "newest first"

    created = await trail(client, tenant, action="series.created")
    assert [r["series"] for r in created] == ["f3", "f2", "f1"]
    f2 = await trail(client, tenant, series="f2")
    assert [r["action"] for r in f2] == ["series.archived", "series.changed", "series.created"]
    both = await trail(client, tenant, series="f2", action="series.changed")
    assert [r["details"]["description"]["new"] for r in both] == ["f2"]
    assert await trail(client, tenant, action="number.voided") == []

    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(len(everything)):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/audit", params=params, headers=tenant.admin)).json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    filtered = await client.get(
        "/audit", params={"action": "series.changed", "limit": 1}, headers=tenant.admin
    )
    second = await client.get(
        "/audit",
        params={"action": "series.changed", "limit": 1, "cursor": filtered.json()["next_cursor"]},
        headers=tenant.admin,
    )
    assert second.json()["items"][0]["series"] == "f2"


async def test_a_tenant_sees_only_its_own_trail(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await create_series(client, tenant, "mine")
    await client.post("/keys", json={"name": "mine"}, headers=tenant.admin)
    theirs = await trail(client, other_tenant)
    assert all(row["actor"] != actor_of(tenant) for row in theirs)
    assert await trail(client, other_tenant, series="mine") == []
    own_ids = {row["id"] for row in await trail(client, tenant)}
    newest = max(own_ids)
    # A cursor is only a position: another tenant's id does not open that tenant's rows.
    after = await trail(client, other_tenant, cursor=cursors.encode("audit", (newest + 1,)))
    assert own_ids.isdisjoint(row["id"] for row in after)


async def test_the_trail_needs_an_admin_key(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert_problem(await client.get("/audit"), 401, "unauthorized")
    assert_problem(await client.get("/audit", headers=tenant.issuer), 403, "forbidden")


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "abc"},
        {"cursor": "-1"},
        {"cursor": cursors.encode("audit", (2**63,))},
        {"cursor": cursors.encode("audit", ("9",))},
        {"cursor": cursors.encode("series", (9,))},
        {"action": "series.deleted"},
        {"series": "Not A Name"},
        {"limit": 0},
        {"limit": 501},
    ],
)
async def test_bad_parameters_are_a_422(
    client: httpx.AsyncClient, tenant: Tenant, params: dict[str, Any]
) -> None:
    response = await client.get("/audit", params=params, headers=tenant.admin)
    assert_problem(response, 422, "invalid-request")
