"""Idempotency-Key: a retried request gets its first answer back, byte for byte, and never costs a
second number, in every mode and across service processes."""

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app import idempotency
from app.settings import Settings
from harness.processes import ServiceProcess, services
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem

MODES = ["gapless", "sequence", "cached"]
REPLAYED = "Idempotent-Replayed"

LEDGER = """
SELECT n.value, n.number FROM numbers n JOIN series s ON s.id = n.series_id
WHERE s.tenant_id = $1 AND s.name = $2 ORDER BY n.value
"""
STORED_KEYS = """
SELECT k.key FROM idempotency_keys k JOIN series s ON s.id = k.series_id
WHERE k.tenant_id = $1 AND s.name = $2 ORDER BY k.key
"""
AGE_KEY = """
UPDATE idempotency_keys SET created_at = now() - make_interval(secs => $3 + 1)
WHERE tenant_id = $1 AND key = $2
"""


def keyed(tenant: Tenant, key: str) -> dict[str, str]:
    return {**tenant.issuer, "Idempotency-Key": key}


async def ledger(pool: asyncpg.Pool, tenant: Tenant, series: str) -> list[int]:
    return [row["value"] for row in await pool.fetch(LEDGER, tenant.id, series)]


async def make_series(client: httpx.AsyncClient, tenant: Tenant, name: str, mode: str) -> None:
    """A series of the mode that records every number, so the ledger shows what was issued."""
    await create_series(
        client, tenant, name, format="I-{seq}", mode=mode, ledger=True, block_size=5
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("endpoint", "body"), [("next", {}), ("batch", {"count": 3})], ids=["next", "batch"]
)
async def test_a_retry_replays_the_first_answer_and_issues_nothing(
    client: httpx.AsyncClient,
    tenant: Tenant,
    pool: asyncpg.Pool,
    mode: str,
    endpoint: str,
    body: dict[str, Any],
) -> None:
    await make_series(client, tenant, "s", mode)
    first = await client.post(f"/series/s/{endpoint}", json=body, headers=keyed(tenant, "k-1"))
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers
    issued = await ledger(pool, tenant, "s")

    for _ in range(3):
        again = await client.post(f"/series/s/{endpoint}", json=body, headers=keyed(tenant, "k-1"))
        assert again.status_code == 201
        assert again.content == first.content
        assert again.headers[REPLAYED] == "true"
        assert again.headers["content-type"] == first.headers["content-type"]
    assert await ledger(pool, tenant, "s") == issued

    fresh = await client.post(f"/series/s/{endpoint}", json=body, headers=keyed(tenant, "k-2"))
    assert fresh.status_code == 201 and fresh.content != first.content
    assert REPLAYED not in fresh.headers


@pytest.mark.parametrize("mode", MODES)
async def test_same_key_from_many_concurrent_requests_issues_one_number(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, mode: str
) -> None:
    await make_series(client, tenant, "s", mode)
    responses = await asyncio.gather(
        *(client.post("/series/s/next", headers=keyed(tenant, "same")) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert sum(REPLAYED not in r.headers for r in responses) == 1
    assert await ledger(pool, tenant, "s") == [responses[0].json()["value"]]


async def test_json_spacing_and_key_order_do_not_make_a_different_request(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "s", format="{var:dept}-{seq}")
    headers = {**keyed(tenant, "k"), "content-type": "application/json"}
    first = await client.post(
        "/series/s/next",
        content=b'{"variables": {"dept": "A"}, "date": "2026-01-02"}',
        headers=headers,
    )
    again = await client.post(
        "/series/s/next",
        content=b'{ "date":"2026-01-02",\n  "variables":{"dept":"A"} }',
        headers=headers,
    )
    assert first.status_code == 201, first.text
    assert again.headers[REPLAYED] == "true" and again.content == first.content


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("next", {}), ("next", {"date": "2026-01-02"})),
        (("batch", {"count": 2}), ("batch", {"count": 3})),
        (("next", {}), ("batch", {"count": 1})),
    ],
    ids=["next body", "batch count", "next then batch"],
)
async def test_same_key_for_a_different_request_is_422(
    client: httpx.AsyncClient,
    tenant: Tenant,
    pool: asyncpg.Pool,
    first: tuple[str, dict[str, Any]],
    second: tuple[str, dict[str, Any]],
) -> None:
    await create_series(client, tenant, "s")
    done = await client.post(f"/series/s/{first[0]}", json=first[1], headers=keyed(tenant, "k"))
    assert done.status_code == 201, done.text
    issued = await ledger(pool, tenant, "s")
    reused = await client.post(f"/series/s/{second[0]}", json=second[1], headers=keyed(tenant, "k"))
    assert_problem(reused, 422, "idempotency-key-reused")
    assert await ledger(pool, tenant, "s") == issued


async def test_the_same_key_on_another_series_or_tenant_is_independent(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    for owner in (tenant, other_tenant):
        await create_series(client, owner, "a", format="A-{seq}")
    await create_series(client, tenant, "b", format="B-{seq}")
    answers = [
        await client.post(f"/series/{series}/next", headers=keyed(owner, "shared"))
        for owner, series in ((tenant, "a"), (tenant, "b"), (other_tenant, "a"))
    ]
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert [a.json()["number"] for a in answers] == ["A-1", "B-1", "A-1"]
    assert not any(REPLAYED in a.headers for a in answers)


async def test_a_failed_request_leaves_its_key_unused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "s", max_value=1)
    assert (await client.post("/series/s/next", headers=tenant.issuer)).status_code == 201
    failed = await client.post("/series/s/next", headers=keyed(tenant, "k"))
    assert_problem(failed, 409, "series-exhausted")
    raised = await client.patch("/series/s", json={"max_value": 2}, headers=tenant.admin)
    assert raised.status_code == 200, raised.text
    retried = await client.post("/series/s/next", headers=keyed(tenant, "k"))
    assert retried.status_code == 201, retried.text
    assert REPLAYED not in retried.headers and retried.json()["value"] == 2


@pytest.mark.parametrize(
    "change",
    [{"archive": True}, {"format": "{var:dept}/{seq}"}],
    ids=["archived", "template needs a variable"],
)
async def test_a_retry_gets_its_answer_after_the_series_stopped_accepting_it(
    client: httpx.AsyncClient, tenant: Tenant, change: dict[str, Any]
) -> None:
    """Otherwise the client would not learn that its first attempt did get a number."""
    await create_series(client, tenant, "s")
    first = await client.post("/series/s/next", headers=keyed(tenant, "k"))
    if change.pop("archive", False):
        changed = await client.delete("/series/s", headers=tenant.admin)
        refused, slug = 409, "series-archived"
    else:
        changed = await client.patch("/series/s", json=change, headers=tenant.admin)
        refused, slug = 422, "invalid-request"
    assert changed.is_success, changed.text

    again = await client.post("/series/s/next", headers=keyed(tenant, "k"))
    assert again.status_code == 201 and again.content == first.content
    assert again.headers[REPLAYED] == "true"
    assert_problem(await client.post("/series/s/next", headers=keyed(tenant, "new")), refused, slug)
    reused = await client.post(
        "/series/s/next", json={"date": "2026-01-02"}, headers=keyed(tenant, "k")
    )
    assert_problem(reused, 422, "idempotency-key-reused")


async def test_an_expired_answer_is_not_replayed_once_the_series_is_archived(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, settings: Settings
) -> None:
    await create_series(client, tenant, "s")
    assert (await client.post("/series/s/next", headers=keyed(tenant, "k"))).status_code == 201
    await pool.execute(AGE_KEY, tenant.id, "k", settings.idempotency_ttl_seconds)
    assert (await client.delete("/series/s", headers=tenant.admin)).status_code == 204
    again = await client.post("/series/s/next", headers=keyed(tenant, "k"))
    assert_problem(again, 409, "series-archived")


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "tab\there", "caf\xe9", "del\x7f"],
    ids=["empty", "256 characters", "tab", "not ascii", "delete character"],
)
async def test_a_malformed_key_is_422_and_issues_nothing(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, key: str
) -> None:
    await create_series(client, tenant, "s")
    headers = {**tenant.issuer, "Idempotency-Key": key.encode("latin-1")}
    response = await client.post("/series/s/next", headers=headers)
    assert_problem(response, 422, "invalid-request")
    assert await ledger(pool, tenant, "s") == []


@pytest.mark.parametrize("key", ["x" * 255, "a", "order 66 / retry #2 ~!@$%^&*()"])
async def test_any_printable_ascii_key_up_to_255_characters_is_accepted(
    client: httpx.AsyncClient, tenant: Tenant, key: str
) -> None:
    await create_series(client, tenant, "s")
    first = await client.post("/series/s/next", headers=keyed(tenant, key))
    again = await client.post("/series/s/next", headers=keyed(tenant, key))
    assert first.status_code == 201, first.text
    assert again.headers[REPLAYED] == "true" and again.content == first.content


@pytest.mark.parametrize("mode", MODES)
async def test_an_expired_key_runs_the_request_again(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, settings: Settings, mode: str
) -> None:
    await make_series(client, tenant, "s", mode)
    first = await client.post("/series/s/next", headers=keyed(tenant, "k"))
    await pool.execute(AGE_KEY, tenant.id, "k", settings.idempotency_ttl_seconds)
    again = await client.post("/series/s/next", headers=keyed(tenant, "k"))
    assert again.status_code == 201, again.text
    assert REPLAYED not in again.headers
    assert again.json()["value"] != first.json()["value"]
    assert await ledger(pool, tenant, "s") == sorted([first.json()["value"], again.json()["value"]])

    replay = await client.post("/series/s/next", headers=keyed(tenant, "k"))
    assert replay.headers[REPLAYED] == "true" and replay.content == again.content


async def test_prune_removes_expired_answers_only(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, settings: Settings
) -> None:
    await create_series(client, tenant, "s")
    for key in ("old", "new"):
        assert (await client.post("/series/s/next", headers=keyed(tenant, key))).status_code == 201
    await pool.execute(AGE_KEY, tenant.id, "old", settings.idempotency_ttl_seconds)

    removed = await idempotency.prune(pool, settings.idempotency_ttl_seconds)
    assert removed >= 1
    assert [r["key"] for r in await pool.fetch(STORED_KEYS, tenant.id, "s")] == ["new"]
    again = await client.post("/series/s/next", headers=keyed(tenant, "old"))
    assert REPLAYED not in again.headers and again.json()["value"] == 3


@pytest.fixture(scope="module")
def two_processes(database_url: str, service_dir: Path) -> Iterator[list[ServiceProcess]]:
    # Waiting for a free connection is not what these tests are about: give it room.
    env = {"DOCNUM_POOL_TIMEOUT_MS": "20000"}
    with services(database_url, service_dir, 2, env=env) as started:
        yield started


@pytest.mark.parametrize("mode", MODES)
async def test_same_key_on_two_processes_at_once_issues_one_number(
    client: httpx.AsyncClient,
    tenant: Tenant,
    pool: asyncpg.Pool,
    two_processes: list[ServiceProcess],
    mode: str,
) -> None:
    await make_series(client, tenant, "s", mode)
    keys = [f"pair-{i}-{secrets.token_hex(4)}" for i in range(30)]
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def send(process: ServiceProcess, key: str) -> httpx.Response:
            return await http.post(f"{process.url}/series/s/next", headers=keyed(tenant, key))

        answers = await asyncio.gather(
            *(send(process, key) for key in keys for process in two_processes)
        )
    pairs = [answers[i : i + 2] for i in range(0, len(answers), 2)]
    for key, pair in zip(keys, pairs, strict=True):
        assert [r.status_code for r in pair] == [201, 201], (key, [r.text for r in pair])
        assert pair[0].content == pair[1].content, key
        assert sorted(r.headers.get(REPLAYED, "") for r in pair) == ["", "true"], key

    values = sorted(pair[0].json()["value"] for pair in pairs)
    assert len(set(values)) == len(keys)
    assert await ledger(pool, tenant, "s") == values
    if mode == "gapless":
        assert values == list(range(1, len(keys) + 1))
    assert [r["key"] for r in await pool.fetch(STORED_KEYS, tenant.id, "s")] == sorted(keys)


# --- the key as a structured-field string, and the changes that are not issuing ------------------


@pytest.mark.parametrize(
    ("raw", "structured"),
    [
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", '"8e03978e-40d5-43e8-bc93-6894a57f9324"'),
        ('say "hi" \\ bye', '"say \\"hi\\" \\\\ bye"'),
    ],
    ids=["plain", "escapes"],
)
async def test_a_structured_field_key_and_its_raw_form_are_one_key(
    client: httpx.AsyncClient, tenant: Tenant, raw: str, structured: str
) -> None:
    await create_series(client, tenant, "sf", format="S-{seq}")
    first = await client.post("/series/sf/next", headers=keyed(tenant, structured))
    again = await client.post("/series/sf/next", headers=keyed(tenant, raw))
    assert first.status_code == again.status_code == 201, again.text
    assert again.content == first.content
    assert again.headers[REPLAYED] == "true"


@pytest.mark.parametrize("header", ['""', '"unterminated', '"bad \\x escape"', '"a"b"'])
async def test_a_malformed_structured_field_key_is_a_422(
    client: httpx.AsyncClient, tenant: Tenant, header: str
) -> None:
    await create_series(client, tenant, "sfbad", format="B-{seq}")
    response = await client.post("/series/sfbad/next", headers=keyed(tenant, header))
    assert_problem(response, 422, "invalid-request")


def admin_keyed(tenant: Tenant, key: str) -> dict[str, str]:
    return {**tenant.admin, "Idempotency-Key": key}


async def test_a_void_retried_after_a_lost_answer_gets_the_first_answer(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "voids", format="V-{seq}")
    await client.post("/series/voids/batch", json={"count": 2}, headers=tenant.issuer)
    headers = admin_keyed(tenant, secrets.token_hex(8))
    url = "/series/voids/numbers/V-1/void"
    first = await client.post(url, json={"reason": "typo"}, headers=headers)
    again = await client.post(url, json={"reason": "typo"}, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.content == first.content
    assert again.headers[REPLAYED] == "true" and REPLAYED not in first.headers
    other_body = await client.post(url, json={"reason": "another"}, headers=headers)
    assert_problem(other_body, 422, "idempotency-key-reused")
    other_number = await client.post(
        "/series/voids/numbers/V-2/void", json={"reason": "typo"}, headers=headers
    )
    assert_problem(other_number, 422, "idempotency-key-reused")
    without_key = await client.post(url, json={"reason": "typo"}, headers=tenant.admin)
    assert_problem(without_key, 409, "already-voided")


async def test_a_series_creation_retried_gets_the_first_answer(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    key = secrets.token_hex(8)
    headers = admin_keyed(tenant, key)
    body = {"name": "made-once", "format": "M-{seq}"}
    first = await client.post("/series", json=body, headers=headers)
    again = await client.post("/series", json=body, headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.content == first.content
    assert again.headers[REPLAYED] == "true"
    assert again.headers["location"] == first.headers["location"] == "/series/made-once"
    changed = await client.post("/series", json={**body, "format": "N-{seq}"}, headers=headers)
    assert_problem(changed, 422, "idempotency-key-reused")
    assert_problem(
        await client.post("/series", json=body, headers=tenant.admin), 409, "series-exists"
    )


async def test_a_key_creation_retried_gets_the_same_key_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = admin_keyed(tenant, secrets.token_hex(8))
    first = await client.post("/keys", json={"name": "erp"}, headers=headers)
    again = await client.post("/keys", json={"name": "erp"}, headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.content == first.content and again.headers[REPLAYED] == "true"
    listed = await client.get("/keys", headers=tenant.admin)
    assert [k["name"] for k in listed.json()["items"]].count("erp") == 1
    changed = await client.post("/keys", json={"name": "erp", "scope": "admin"}, headers=headers)
    assert_problem(changed, 422, "idempotency-key-reused")
