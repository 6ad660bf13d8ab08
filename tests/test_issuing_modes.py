"""Each mode issues unique numbers in the right shape, alone and under concurrency."""

import asyncio

import httpx
import pytest

from tests.support import Tenant, create_series

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
