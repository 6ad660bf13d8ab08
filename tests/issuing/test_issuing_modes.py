"""Every mode: numbers in the right shape on the start/step grid, unique under concurrency, never
past max_value; and what a request can run into (an archived or unknown series, missing
variables, a number already in the ledger)."""

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem
from tests.support.issuing import rewrite_format

MODES = ["gapless", "sequence", "cached"]


@pytest.mark.parametrize("mode", MODES)
async def test_next_issues_formatted_consecutive_numbers(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(
        client,
        tenant,
        "inv",
        format="INV-{YYYY}-{seq:04}",
        mode=mode,
        reset="yearly",
        block_size=10,
    )
    numbers = []
    for _ in range(3):
        response = await client.post(
            "/series/inv/next", json={"date": "2026-05-01"}, headers=tenant.issuer
        )
        assert response.status_code == 201, response.text
        numbers.append(response.json())
    assert [n["number"] for n in numbers] == ["INV-2026-0001", "INV-2026-0002", "INV-2026-0003"]
    assert numbers[0] | {"issued_at": None} == {
        "series": "inv",
        "number": "INV-2026-0001",
        "value": 1,
        "period": "2026",
        "date": "2026-05-01",
        "issued_at": None,
    }


@pytest.mark.parametrize("mode", MODES)
async def test_concurrent_requests_never_share_a_number(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "c", mode=mode, block_size=7)

    async def one() -> int:
        response = await client.post("/series/c/next", headers=tenant.issuer)
        assert response.status_code == 201, response.text
        value: int = response.json()["value"]
        return value

    values = await asyncio.gather(*(one() for _ in range(300)))
    assert len(set(values)) == 300
    if mode == "gapless":
        assert sorted(values) == list(range(1, 301))


@pytest.mark.parametrize("mode", MODES)
async def test_values_follow_start_and_step(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "s", mode=mode, start=5, step=3, format="S{seq:03}")
    singles = [await next_value(client, tenant) for _ in range(3)]
    response = await client.post("/series/s/batch", json={"count": 4}, headers=tenant.issuer)
    assert response.status_code == 201, response.text
    assert singles == [5, 8, 11]
    assert response.json()["values"] == [14, 17, 20, 23]
    assert response.json()["numbers"] == ["S014", "S017", "S020", "S023"]


@pytest.mark.parametrize("mode", MODES)
async def test_past_max_value_is_a_409_and_never_wraps(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    """10, 15, ..., 30: five values. A batch that does not fit is refused and takes none."""
    await create_series(
        client, tenant, "s", mode=mode, start=10, step=5, max_value=32, block_size=10
    )
    first = await client.post("/series/s/batch", json={"count": 3}, headers=tenant.issuer)
    assert first.json()["values"] == [10, 15, 20]
    too_many = await client.post("/series/s/batch", json={"count": 3}, headers=tenant.issuer)
    assert_problem(too_many, 409, "series-exhausted")
    assert [await next_value(client, tenant) for _ in range(2)] == [25, 30]
    for _ in range(3):
        response = await client.post("/series/s/next", headers=tenant.issuer)
        assert_problem(response, 409, "series-exhausted")
    response = await client.post("/series/s/batch", json={"count": 1}, headers=tenant.issuer)
    assert_problem(response, 409, "series-exhausted")


@pytest.mark.parametrize("mode", MODES)
async def test_concurrent_requests_for_the_last_values(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "s", mode=mode, max_value=25, block_size=4)
    responses = await asyncio.gather(
        *(client.post("/series/s/next", headers=tenant.issuer) for _ in range(40))
    )
    issued = sorted(r.json()["value"] for r in responses if r.status_code == 201)
    refused = [r for r in responses if r.status_code != 201]
    for response in refused:
        assert_problem(response, 409, "series-exhausted")
    if mode == "cached":  # blocks of a process that stops early are skipped, never repeated
        assert len(set(issued)) == len(issued) and set(issued) <= set(range(1, 26))
    else:
        assert issued == list(range(1, 26))


@pytest.mark.parametrize("mode", MODES)
async def test_an_archived_series_issues_nothing(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "s", mode=mode)
    assert await next_value(client, tenant) == 1
    assert (await client.delete("/series/s", headers=tenant.admin)).status_code == 204
    assert_problem(
        await client.post("/series/s/next", headers=tenant.issuer), 409, "series-archived"
    )
    response = await client.post("/series/s/batch", json={"count": 2}, headers=tenant.issuer)
    assert_problem(response, 409, "series-archived")


async def test_an_unknown_series_is_a_404(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert_problem(
        await client.post("/series/nope/next", headers=tenant.issuer), 404, "series-not-found"
    )
    response = await client.post("/series/nope/batch", json={"count": 2}, headers=tenant.issuer)
    assert_problem(response, 404, "series-not-found")


async def test_another_tenants_series_is_unknown(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await create_series(client, tenant, "s")
    response = await client.post("/series/s/next", headers=other_tenant.issuer)
    assert_problem(response, 404, "series-not-found")


@pytest.mark.parametrize("mode", MODES)
async def test_missing_variables_are_a_422_and_cost_no_value(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "s", mode=mode, format="{var:dept}-{seq}")
    response = await client.post("/series/s/next", headers=tenant.issuer)
    body = assert_problem(response, 422, "invalid-request")
    assert body["errors"] == [{"field": "variables", "message": "missing dept"}]
    response = await client.post(
        "/series/s/next", json={"variables": {"dept": "ops"}}, headers=tenant.issuer
    )
    assert response.json()["number"] == "ops-1"


@pytest.mark.parametrize("mode", ["gapless", "sequence"])
async def test_a_number_already_in_the_ledger_is_a_409(
    client: httpx.AsyncClient, tenant: Tenant, app: Any, pool: asyncpg.Pool, mode: str
) -> None:
    """After a format change made behind the service's back, value 10 reads like value 1 did;
    the ledger refuses it (the service itself refuses such a change: format-conflict).

    gapless cannot skip the value, so it keeps refusing until the format changes again;
    a sequence loses the value, as it loses the value of any failed request.
    """
    await create_series(client, tenant, "s", mode=mode, format="{seq}0", ledger=True)
    assert await next_value(client, tenant) == 1  # "10"
    await rewrite_format(pool, tenant, "s", "{seq}")
    app.state.services.catalog.forget(tenant.id, "s")  # as the notification will, but now
    batch = await client.post("/series/s/batch", json={"count": 8}, headers=tenant.issuer)
    assert batch.json()["values"] == list(range(2, 10))
    response = await client.post("/series/s/next", headers=tenant.issuer)
    assert_problem(response, 409, "number-collision")
    if mode == "gapless":
        response = await client.post("/series/s/next", headers=tenant.issuer)
        assert_problem(response, 409, "number-collision")
        await rewrite_format(pool, tenant, "s", "N{seq}")
        app.state.services.catalog.forget(tenant.id, "s")
        assert await next_value(client, tenant) == 10
    else:
        assert await next_value(client, tenant) == 11


async def test_a_cached_number_already_in_the_ledger_is_a_409(
    client: httpx.AsyncClient, tenant: Tenant, app: Any, pool: asyncpg.Pool
) -> None:
    """Cached values come from blocks, so which requests meet values 10 and 20 is not fixed."""
    await create_series(client, tenant, "s", mode="cached", format="{seq}0", ledger=True)
    first = await client.post("/series/s/batch", json={"count": 2}, headers=tenant.issuer)
    assert first.json()["numbers"] == ["10", "20"]
    await rewrite_format(pool, tenant, "s", "{seq}")
    app.state.services.catalog.forget(tenant.id, "s")  # as the notification will, but now
    responses = [await client.post("/series/s/next", headers=tenant.issuer) for _ in range(30)]
    refused = [r for r in responses if r.status_code != 201]
    assert len(refused) == 2
    for response in refused:
        assert_problem(response, 409, "number-collision")
    values = [r.json()["value"] for r in responses if r.status_code == 201]
    assert len(set(values)) == len(values) and not {10, 20} & set(values)


async def next_value(client: httpx.AsyncClient, tenant: Tenant) -> int:
    response = await client.post("/series/s/next", headers=tenant.issuer)
    assert response.status_code == 201, response.text
    value: int = response.json()["value"]
    return value


@pytest.mark.parametrize("mode", MODES)
async def test_concurrent_first_requests_with_idempotency_keys_all_succeed(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    """A sequence created inside one request's transaction is not used by another request before
    that transaction commits."""
    await create_series(client, tenant, "first", mode=mode, ledger=True)

    async def one(key: int) -> int:
        headers = {**tenant.issuer, "Idempotency-Key": f"first-{key}"}
        response = await client.post("/series/first/next", headers=headers)
        assert response.status_code == 201, response.text
        value: int = response.json()["value"]
        return value

    values = await asyncio.gather(*(one(key) for key in range(20)))
    assert len(set(values)) == 20
