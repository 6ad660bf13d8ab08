"""HTTP conventions of the API: Location on what a 201 creates, ETag and If-Match on series,
CSV by content negotiation, one cursor format with has_more and Link on every list, and restoring
an archived series."""

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from app.main import create_app
from app.series import SERIES_CHANNEL
from app.settings import Settings
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem
from tests.support.database import lock_waiters

# --- Location ----------------------------------------------------------------------------------


async def test_a_created_series_and_key_are_named_in_location(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    made = await client.post(
        "/series", json={"name": "located", "format": "L-{seq}"}, headers=tenant.admin
    )
    assert made.headers["location"] == "/series/located"
    assert (await client.get(made.headers["location"], headers=tenant.admin)).json() == {
        **made.json(),
        "counters": [],
    }
    key = await client.post("/keys", json={"name": "located"}, headers=tenant.admin)
    assert key.headers["location"] == f"/keys/{key.json()['prefix']}"


@pytest.mark.parametrize("endpoint", ["next", "batch"])
async def test_an_issued_number_is_named_in_location_percent_encoded(
    client: httpx.AsyncClient, tenant: Tenant, endpoint: str
) -> None:
    await create_series(client, tenant, "slashes", format="INV/{seq:04}?#%")
    body = {"count": 2} if endpoint == "batch" else {}
    headers = {**tenant.issuer, "Idempotency-Key": f"loc-{endpoint}"}
    issued = await client.post(f"/series/slashes/{endpoint}", json=body, headers=headers)
    assert issued.status_code == 201, issued.text
    assert issued.headers["location"] == "/series/slashes/numbers/INV%2F0001%3F%23%25"
    found = await client.get(issued.headers["location"], headers=tenant.issuer)
    assert found.json()["number"] == "INV/0001?#%"
    replayed = await client.post(f"/series/slashes/{endpoint}", json=body, headers=headers)
    assert replayed.headers["location"] == issued.headers["location"]
    # A series without a ledger sends no Location: there is nothing to look the number up in.
    await create_series(client, tenant, "unrecorded", format="U-{seq}", mode="cached")
    unrecorded = await client.post(
        f"/series/unrecorded/{endpoint}", json=body, headers=tenant.issuer
    )
    assert unrecorded.status_code == 201 and "location" not in unrecorded.headers


# --- ETag and If-Match --------------------------------------------------------------------------


async def test_every_answer_with_a_series_carries_its_version_as_etag(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    made = await client.post(
        "/series", json={"name": "tagged", "format": "T-{seq}"}, headers=tenant.admin
    )
    read = await client.get("/series/tagged", headers=tenant.issuer)
    assert made.headers["etag"] == read.headers["etag"] == '"v1"'
    changed = await client.patch(
        "/series/tagged", json={"description": "new"}, headers=tenant.admin
    )
    assert changed.headers["etag"] == '"v2"'
    assert (await client.get("/series/tagged", headers=tenant.issuer)).headers["etag"] == '"v2"'


async def test_a_change_from_a_stale_etag_is_412_and_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "stale", format="S-{seq}")
    etag = (await client.get("/series/stale", headers=tenant.admin)).headers["etag"]
    first = await client.patch(
        "/series/stale", json={"description": "first"}, headers={**tenant.admin, "If-Match": etag}
    )
    assert first.status_code == 200, first.text
    second = await client.patch(
        "/series/stale", json={"description": "second"}, headers={**tenant.admin, "If-Match": etag}
    )
    assert_problem(second, 412, "precondition-failed")
    assert (await client.get("/series/stale", headers=tenant.admin)).json()["description"] == (
        "first"
    )
    etag = first.headers["etag"]
    for matching in ("{}", '"v0", {}', "*"):
        again = await client.patch(
            "/series/stale",
            json={"step": 2},
            headers={**tenant.admin, "If-Match": matching.format(etag)},
        )
        assert again.status_code == 200, (matching, again.text)
        etag = again.headers["etag"]
    weak = await client.patch(
        "/series/stale",
        json={"step": 3},
        headers={**tenant.admin, "If-Match": f"W/{etag}"},
    )
    assert_problem(weak, 412, "precondition-failed")


async def test_two_changes_from_one_etag_give_one_change_and_one_412(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """Both requests wait on the series row; the second compares with what the first wrote."""
    await create_series(client, tenant, "racing", format="R-{seq}")
    etag = (await client.get("/series/racing", headers=tenant.admin)).headers["etag"]
    headers = {**tenant.admin, "If-Match": etag}
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute(
            "SELECT 1 FROM series WHERE tenant_id = $1 AND name = 'racing' FOR UPDATE", tenant.id
        )
        changes = [
            asyncio.create_task(
                client.patch("/series/racing", json={"description": text}, headers=headers)
            )
            for text in ("one", "two")
        ]
        async with pool.acquire() as watcher:  # outside the holder's statistics snapshot
            await lock_waiters(watcher, 2, mine=False)
    answers = await asyncio.gather(*changes)
    assert sorted(a.status_code for a in answers) == [200, 412], [a.text for a in answers]


@pytest.fixture
async def strict_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    strict = create_app(settings.model_copy(update={"require_if_match": True}))
    async with strict.router.lifespan_context(strict):
        transport = httpx.ASGITransport(app=strict)
        async with httpx.AsyncClient(transport=transport, base_url="http://docnum.test") as http:
            yield http


async def test_a_change_without_if_match_is_428_when_the_service_requires_it(
    strict_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(strict_client, tenant, "strict", format="S-{seq}")
    bare = await strict_client.patch("/series/strict", json={"step": 2}, headers=tenant.admin)
    assert_problem(bare, 428, "precondition-required")
    conditional = await strict_client.patch(
        "/series/strict", json={"step": 2}, headers={**tenant.admin, "If-Match": '"v1"'}
    )
    assert conditional.status_code == 200, conditional.text


# --- CSV negotiation ----------------------------------------------------------------------------


@pytest.fixture
async def recorded(client: httpx.AsyncClient, tenant: Tenant) -> str:
    await create_series(client, tenant, "negotiated", format="N-{seq}")
    issued = await client.post("/series/negotiated/batch", json={"count": 3}, headers=tenant.issuer)
    assert issued.status_code == 201, issued.text
    return "/series/negotiated/numbers"


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        ("application/json, text/csv;q=0.1", "application/json"),
        ("text/csv;q=0.5, application/json;q=0.4", "text/csv"),
        ("text/csv, */*;q=0.8", "text/csv"),
        ("*/*", "application/json"),
        ("text/*", "text/csv"),
        ("text/csv;q=0, */*", "application/json"),
        ("text/html", "application/json"),
    ],
)
async def test_the_ledger_answers_the_representation_accept_prefers(
    client: httpx.AsyncClient, tenant: Tenant, recorded: str, accept: str, media: str
) -> None:
    response = await client.get(recorded, headers={**tenant.issuer, "Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == media
    assert response.headers["vary"] == "Accept"


async def test_format_csv_wins_over_accept_for_tools_that_cannot_set_headers(
    client: httpx.AsyncClient, tenant: Tenant, recorded: str
) -> None:
    headers = {**tenant.issuer, "Accept": "application/json"}
    response = await client.get(recorded, params={"format": "csv"}, headers=headers)
    assert response.headers["content-type"].startswith("text/csv")
    asked = await client.get(recorded, params={"format": "json"}, headers={"Accept": "text/csv"})
    assert_problem(asked, 401, "unauthorized")  # the format is read after the key, like any input
    json_one = await client.get(
        recorded, params={"format": "json"}, headers={**tenant.issuer, "Accept": "text/csv"}
    )
    assert json_one.headers["content-type"] == "application/json"


async def test_csv_timestamps_are_iso_8601_like_the_json_ones(
    client: httpx.AsyncClient, tenant: Tenant, recorded: str
) -> None:
    await client.post(f"{recorded}/N-1/void", json={"reason": "test"}, headers=tenant.admin)
    exported = await client.get(recorded, params={"format": "csv"}, headers=tenant.issuer)
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    iso = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?\+00:00$")
    assert all(iso.fullmatch(row["issued_at"]) for row in rows), rows
    assert iso.fullmatch(rows[0]["voided_at"]), rows[0]


# --- pagination ---------------------------------------------------------------------------------

NEXT_LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


async def walk(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> list[Any]:
    """Every item of a list, following Link rel="next" and checking has_more and next_cursor."""
    items: list[Any] = []
    next_url: str | None = url
    for _ in range(50):
        if next_url is None:
            return items
        page = await client.get(next_url, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        items.extend(body["items"])
        assert body["has_more"] is (body["next_cursor"] is not None)
        link = page.headers.get("link")
        if body["has_more"]:
            match = NEXT_LINK.fullmatch(link or "")
            assert match is not None, link
            assert f"cursor={body['next_cursor']}" in match["url"]
            next_url = match["url"]
        else:
            assert link is None
            next_url = None
    raise AssertionError("more pages than expected")


async def test_every_list_pages_with_one_cursor_format_has_more_and_link(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for name in ("p1", "p2", "p3"):
        await create_series(client, tenant, name, format=f"{name.upper()}-{{seq}}")
    await client.post("/series/p1/batch", json={"count": 5}, headers=tenant.issuer)
    for _ in range(2):
        await client.post("/keys", json={}, headers=tenant.admin)
    admin = tenant.admin
    series = await walk(client, "/series?limit=2", admin)
    assert [s["name"] for s in series] == ["p1", "p2", "p3"]
    ledger = await walk(client, "/series/p1/numbers?limit=2", admin)
    assert [n["value"] for n in ledger] == [1, 2, 3, 4, 5]
    audit = await walk(client, "/audit?limit=2", admin)
    # Three series and two keys, after the two keys the tenant was made with.
    assert len(audit) == 7 and len({entry["id"] for entry in audit}) == 7
    keys = await walk(client, "/keys?limit=1", admin)
    assert len(keys) == 4 and len({key["prefix"] for key in keys}) == 4


async def test_a_cursor_of_one_list_is_refused_by_another(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for name in ("c1", "c2"):
        await create_series(client, tenant, name)
    page = await client.get("/series", params={"limit": 1}, headers=tenant.admin)
    cursor = page.json()["next_cursor"]
    for url in ("/audit", "/keys", "/series/c1/numbers"):
        refused = await client.get(url, params={"cursor": cursor}, headers=tenant.admin)
        assert_problem(refused, 422, "invalid-request")


# --- restoring an archived series ---------------------------------------------------------------


async def test_a_restored_series_issues_again_audited_and_announced(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "back", format="B-{seq}")
    await client.post("/series/back/next", headers=tenant.issuer)
    assert (await client.delete("/series/back", headers=tenant.admin)).status_code == 204
    archived = await client.post("/series/back/next", headers=tenant.issuer)
    assert_problem(archived, 409, "series-archived")

    announced: asyncio.Queue[str] = asyncio.Queue()

    def heard(*notification: Any) -> None:
        announced.put_nowait(notification[3])

    async with pool.acquire() as listener:
        await listener.add_listener(SERIES_CHANNEL, heard)
        try:
            restored = await client.post("/series/back/restore", headers=tenant.admin)
            payload = await asyncio.wait_for(announced.get(), timeout=10)
        finally:
            await listener.remove_listener(SERIES_CHANNEL, heard)
    assert payload == f"{tenant.id}:back"
    assert restored.status_code == 200, restored.text
    assert restored.json()["archived"] is False
    assert restored.headers["etag"] == '"v3"'  # created v1, archived v2, restored v3
    issued = await client.post("/series/back/next", headers=tenant.issuer)
    assert issued.json()["number"] == "B-2"
    trail = await client.get("/audit", params={"series": "back"}, headers=tenant.admin)
    assert [e["action"] for e in trail.json()["items"]][:2] == [
        "series.restored",
        "series.archived",
    ]
    twice = await client.post("/series/back/restore", headers=tenant.admin)
    assert twice.headers["etag"] == '"v3"'  # restoring a series in use changes nothing
