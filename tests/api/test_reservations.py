"""Reservations: reserve, then confirm, release or let expire, in every mode.

Time passes for a reservation by moving its ``expires_at`` into the past in the database (the
database is the clock of record); the sweep is run directly, so no test waits for one. The app's
own sweeper may get there first: every outcome checked is the same either way.
"""

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from app import reservations
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem

# The ledger's document reference of a number of the tenant.
REFERENCE = """
SELECT n.document_ref FROM numbers AS n JOIN series AS s ON s.id = n.series_id
WHERE s.tenant_id = $1 AND n.number = $2
"""
LAPSE = "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = $1"


async def reserve(
    client: httpx.AsyncClient, tenant: Tenant, series: str = "r", **body: Any
) -> dict[str, Any]:
    response = await client.post(f"/series/{series}/reservations", json=body, headers=tenant.issuer)
    assert response.status_code == 201, response.text
    reservation: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/series/{series}/reservations/{reservation['id']}"
    return reservation


async def next_value(client: httpx.AsyncClient, tenant: Tenant, series: str = "r") -> int:
    response = await client.post(f"/series/{series}/next", json={}, headers=tenant.issuer)
    assert response.status_code == 201, response.text
    value: int = response.json()["value"]
    return value


async def confirm(
    client: httpx.AsyncClient, tenant: Tenant, reservation: dict[str, Any], **body: Any
) -> httpx.Response:
    return await client.post(
        f"/series/{reservation['series']}/reservations/{reservation['id']}/confirm",
        json=body,
        headers=tenant.issuer,
    )


async def release(
    client: httpx.AsyncClient, tenant: Tenant, reservation: dict[str, Any]
) -> httpx.Response:
    return await client.delete(
        f"/series/{reservation['series']}/reservations/{reservation['id']}",
        headers=tenant.issuer,
    )


async def entry(
    client: httpx.AsyncClient, tenant: Tenant, number: str, series: str = "r"
) -> dict[str, Any]:
    response = await client.get(f"/series/{series}/numbers/{number}", headers=tenant.issuer)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def assert_no_gaps(client: httpx.AsyncClient, tenant: Tenant, series: str = "r") -> None:
    """No value is missing from the gapless ledger, and its hash chain verifies."""
    response = await client.get(f"/series/{series}/gaps", headers=tenant.issuer)
    assert response.status_code == 200, response.text
    assert response.json()["missing"] == 0, response.json()
    verified = await client.get(f"/series/{series}/verify", headers=tenant.issuer)
    assert verified.status_code == 200 and verified.json()["intact"] is True, verified.text


async def lapse(pool: asyncpg.Pool, reservation: dict[str, Any]) -> None:
    await pool.execute(LAPSE, uuid.UUID(reservation["id"]))


async def test_a_confirmed_reservation_issues_its_numbers_with_the_document_reference(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "r", format="R-{seq:04}")
    held = await reserve(client, tenant, document_ref="SO-1", ttl_seconds=60)
    assert held["status"] == "reserved" and held["numbers"] == ["R-0001"]
    assert held["values"] == [1] and held["count"] == 1 and held["document_ref"] == "SO-1"
    assert held["expires_at"] > held["reserved_at"]
    assert (await entry(client, tenant, "R-0001"))["status"] == "reserved"
    assert await pool.fetchval(REFERENCE, tenant.id, "R-0001") == "SO-1"
    await assert_no_gaps(client, tenant)

    response = await confirm(client, tenant, held, document_ref="INV-DRAFT-1")
    assert response.status_code == 200, response.text
    confirmed = response.json()
    assert confirmed["status"] == "confirmed" and confirmed["settled_at"] is not None
    assert confirmed["document_ref"] == "INV-DRAFT-1"
    assert (await entry(client, tenant, "R-0001"))["status"] == "issued"
    assert await pool.fetchval(REFERENCE, tenant.id, "R-0001") == "INV-DRAFT-1"
    assert await next_value(client, tenant) == 2
    await assert_no_gaps(client, tenant)


async def test_a_released_gapless_number_is_handed_out_again(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "r")
    held = await reserve(client, tenant, count=3)
    assert held["values"] == [1, 2, 3]
    response = await release(client, tenant, held)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "released"
    assert await next_value(client, tenant) == 1
    await assert_no_gaps(client, tenant)


async def test_released_gapless_reservations_on_top_of_each_other_are_all_handed_out_again(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "r")
    lower = await reserve(client, tenant)
    upper = await reserve(client, tenant, count=2)
    assert (await release(client, tenant, upper)).status_code == 200
    assert (await release(client, tenant, lower)).status_code == 200
    assert [await next_value(client, tenant) for _ in range(3)] == [1, 2, 3]
    await assert_no_gaps(client, tenant)


async def test_a_released_gapless_number_below_an_issued_one_is_voided_as_released(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "r", format="R-{seq}")
    held = await reserve(client, tenant)
    assert await next_value(client, tenant) == 2
    assert (await release(client, tenant, held)).status_code == 200
    voided = await entry(client, tenant, "R-1")
    assert voided["status"] == "voided" and voided["void_reason"] == "released"
    assert await next_value(client, tenant) == 3
    await assert_no_gaps(client, tenant)


async def test_an_expired_gapless_number_is_handed_out_again_when_it_is_the_last(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "r")
    held = await reserve(client, tenant, count=2)
    await lapse(pool, held)
    await reservations.expire_lapsed(pool)
    found = await client.get(f"/series/r/reservations/{held['id']}", headers=tenant.issuer)
    assert found.json()["status"] == "expired"
    assert await next_value(client, tenant) == 1
    await assert_no_gaps(client, tenant)


async def test_an_expired_gapless_number_below_an_issued_one_is_voided_as_expired(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "r", format="R-{seq}")
    held = await reserve(client, tenant)
    assert await next_value(client, tenant) == 2
    await lapse(pool, held)
    await reservations.expire_lapsed(pool)
    voided = await entry(client, tenant, "R-1")
    assert voided["status"] == "voided" and voided["void_reason"] == "expired"
    await assert_no_gaps(client, tenant)


async def test_confirm_and_release_twice_answer_the_same(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "r")
    confirmed = await reserve(client, tenant)
    first = await confirm(client, tenant, confirmed, document_ref="A")
    again = await confirm(client, tenant, confirmed)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    released = await reserve(client, tenant)
    first = await release(client, tenant, released)
    again = await release(client, tenant, released)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert await next_value(client, tenant) == 2


async def test_a_released_reservation_cannot_be_confirmed(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "r")
    held = await reserve(client, tenant)
    await release(client, tenant, held)
    assert_problem(await confirm(client, tenant, held), 409, "reservation-released")


async def test_an_expired_reservation_cannot_be_confirmed_even_before_the_sweep(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "r")
    held = await reserve(client, tenant)
    await lapse(pool, held)
    assert_problem(await confirm(client, tenant, held), 409, "reservation-expired")
    assert_problem(await confirm(client, tenant, held), 409, "reservation-expired")
    released = await release(client, tenant, held)
    assert released.status_code == 200 and released.json()["status"] == "expired"
    assert await next_value(client, tenant) == 1


async def test_a_confirmed_reservation_cannot_be_released(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "r")
    held = await reserve(client, tenant)
    assert (await confirm(client, tenant, held)).status_code == 200
    assert_problem(await release(client, tenant, held), 409, "reservation-confirmed")


async def test_unknown_and_foreign_reservations_are_not_found(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await create_series(client, tenant, "r")
    await create_series(client, tenant, "s")
    await create_series(client, other_tenant, "r")
    held = await reserve(client, tenant)
    unknown = {"series": "r", "id": str(uuid.uuid4())}
    assert_problem(await confirm(client, tenant, unknown), 404, "reservation-not-found")
    assert_problem(await release(client, tenant, unknown), 404, "reservation-not-found")
    other_series = {**held, "series": "s"}
    assert_problem(await confirm(client, tenant, other_series), 404, "reservation-not-found")
    assert_problem(await confirm(client, other_tenant, held), 404, "reservation-not-found")
    assert_problem(await release(client, other_tenant, held), 404, "reservation-not-found")
    found = await client.get(f"/series/r/reservations/{held['id']}", headers=other_tenant.issuer)
    assert_problem(found, 404, "reservation-not-found")
    assert (await confirm(client, tenant, held)).status_code == 200


@pytest.mark.parametrize("mode", ["sequence", "cached"])
async def test_a_released_number_of_a_sequence_or_cached_series_is_voided_and_never_reused(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, mode: str
) -> None:
    await create_series(client, tenant, "r", format="R-{seq}", mode=mode, ledger=True)
    released = await reserve(client, tenant)
    expired = await reserve(client, tenant)
    confirmed = await reserve(client, tenant)
    assert (await release(client, tenant, released)).status_code == 200
    await lapse(pool, expired)
    assert_problem(await confirm(client, tenant, expired), 409, "reservation-expired")
    assert (await confirm(client, tenant, confirmed)).status_code == 200
    reasons = {
        n: (e["status"], e["void_reason"])
        for n in (released["numbers"][0], expired["numbers"][0], confirmed["numbers"][0])
        for e in [await entry(client, tenant, n)]
    }
    assert reasons == {
        released["numbers"][0]: ("voided", "released"),
        expired["numbers"][0]: ("voided", "expired"),
        confirmed["numbers"][0]: ("issued", None),
    }
    taken = {v for r in (released, expired, confirmed) for v in r["values"]}
    assert await next_value(client, tenant) not in taken


@pytest.mark.parametrize("mode", ["sequence", "cached"])
async def test_a_series_without_a_ledger_reserves_confirms_and_releases(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "r", mode=mode, ledger=False)
    with_ref = await client.post(
        "/series/r/reservations", json={"document_ref": "D-1"}, headers=tenant.issuer
    )
    assert_problem(with_ref, 409, "ledger-disabled")
    held = await reserve(client, tenant, count=2)
    assert_problem(await confirm(client, tenant, held, document_ref="D-1"), 409, "ledger-disabled")
    response = await confirm(client, tenant, held)
    assert response.status_code == 200 and response.json()["status"] == "confirmed"
    released = await reserve(client, tenant)
    assert (await release(client, tenant, released)).json()["status"] == "released"
    assert_problem(await confirm(client, tenant, released), 409, "reservation-released")
    assert await next_value(client, tenant) not in held["values"] + released["values"]


async def test_a_reservation_takes_its_number_as_next_would(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "r", format="{var:branch}-{YYYY}-{seq:03}", reset="yearly")
    held = await reserve(client, tenant, date="2026-03-31", variables={"branch": "B7"})
    assert held["numbers"] == ["B7-2026-001"] and held["period"] == "2026"
    assert held["date"] == "2026-03-31"
    missing = await client.post("/series/r/reservations", json={}, headers=tenant.issuer)
    assert_problem(missing, 422, "invalid-request")


async def test_a_reservation_beyond_the_limits_is_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "r")
    too_long = await client.post(
        "/series/r/reservations", json={"ttl_seconds": 10**9}, headers=tenant.issuer
    )
    assert_problem(too_long, 422, "invalid-request")
    too_many = await client.post(
        "/series/r/reservations", json={"count": 10**7}, headers=tenant.issuer
    )
    assert_problem(too_many, 422, "invalid-request")
    archived = await client.delete("/series/r", headers=tenant.admin)
    assert archived.status_code == 204, archived.text
    assert_problem(
        await client.post("/series/r/reservations", headers=tenant.issuer), 409, "series-archived"
    )


@pytest.mark.parametrize("mode", ["gapless", "sequence"])
async def test_a_reservation_retried_with_its_idempotency_key_gets_the_same_one_back(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "r", mode=mode)
    headers = {**tenant.issuer, "Idempotency-Key": "order-17"}
    first = await client.post("/series/r/reservations", json={"count": 2}, headers=headers)
    again = await client.post("/series/r/reservations", json={"count": 2}, headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json() == again.json()
    assert again.headers["location"] == first.headers["location"]
    other = await client.post("/series/r/reservations", json={"count": 3}, headers=headers)
    assert_problem(other, 422, "idempotency-key-reused")
    assert await next_value(client, tenant) == 3


async def test_a_reserved_number_cannot_be_voided_only_released(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "r", format="R-{seq}")
    held = await reserve(client, tenant)
    refused = await client.post(
        "/series/r/numbers/R-1/void", json={"reason": "typo"}, headers=tenant.admin
    )
    assert_problem(refused, 409, "number-reserved")
    assert (await entry(client, tenant, "R-1"))["status"] == "reserved"
    assert (await confirm(client, tenant, held)).status_code == 200


async def test_reserved_numbers_are_settled_in_the_ledger_even_after_it_was_turned_off(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "r", format="R-{seq}", mode="sequence", ledger=True)
    confirmed = await reserve(client, tenant)
    released = await reserve(client, tenant)
    off = await client.patch("/series/r", json={"ledger": False}, headers=tenant.admin)
    assert off.status_code == 200, off.text
    assert (await confirm(client, tenant, confirmed)).status_code == 200
    assert (await release(client, tenant, released)).status_code == 200
    rows = await pool.fetch(
        "SELECT n.number, n.status FROM numbers AS n JOIN series AS s ON s.id = n.series_id "
        "WHERE s.tenant_id = $1 ORDER BY n.value",
        tenant.id,
    )
    assert [tuple(r) for r in rows] == [("R-1", "issued"), ("R-2", "voided")]
