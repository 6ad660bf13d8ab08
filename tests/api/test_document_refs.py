"""Document references: kept with the numbers of next and batch, attached later with PATCH,
shown by the lookup and found by the ledger's filter."""

import csv
import io
from typing import Any

import httpx

from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem


async def entry(client: httpx.AsyncClient, tenant: Tenant, series: str, number: str) -> Any:
    response = await client.get(f"/series/{series}/numbers/{number}", headers=tenant.issuer)
    assert response.status_code == 200, response.text
    return response.json()


async def test_next_and_batch_keep_the_document_ref_in_the_ledger(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for mode in ("gapless", "sequence", "cached"):
        await create_series(client, tenant, mode, mode=mode, ledger=True, format="D-{seq}")
        one = await client.post(
            f"/series/{mode}/next", json={"document_ref": "SO-1"}, headers=tenant.issuer
        )
        assert one.status_code == 201, one.text
        many = await client.post(
            f"/series/{mode}/batch",
            json={"count": 2, "document_ref": "SO-2"},
            headers=tenant.issuer,
        )
        assert many.status_code == 201, many.text
        found = await entry(client, tenant, mode, one.json()["number"])
        assert (found["document_ref"], found["external"]) == ("SO-1", False)
        listed = await client.get(
            f"/series/{mode}/numbers", params={"document_ref": "SO-2"}, headers=tenant.issuer
        )
        assert [e["number"] for e in listed.json()["items"]] == many.json()["numbers"], mode


async def test_a_replayed_next_with_a_document_ref_is_the_first_answer_byte_for_byte(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "r", format="R-{seq}")
    headers = {**tenant.issuer, "Idempotency-Key": "order-7"}
    first = await client.post("/series/r/next", json={"document_ref": "SO-7"}, headers=headers)
    again = await client.post("/series/r/next", json={"document_ref": "SO-7"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await client.post("/series/r/next", json={"document_ref": "SO-8"}, headers=headers)
    assert_problem(other, 422, "idempotency-key-reused")


async def test_a_key_used_without_a_reference_hashes_as_before_references_existed(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "h", format="H-{seq}")
    headers = {**tenant.issuer, "Idempotency-Key": "plain"}
    first = await client.post("/series/h/next", json={}, headers=headers)
    again = await client.post("/series/h/next", json={"document_ref": None}, headers=headers)
    assert again.content == first.content


async def test_a_series_without_a_ledger_refuses_a_document_ref(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "n", mode="cached", format="N-{seq}")
    for path, body in (("next", {}), ("batch", {"count": 2})):
        response = await client.post(
            f"/series/n/{path}", json={**body, "document_ref": "SO-1"}, headers=tenant.issuer
        )
        problem = assert_problem(response, 409, "ledger-disabled")
        assert "document_ref" in problem["detail"]
    plain = await client.post("/series/n/next", json={}, headers=tenant.issuer)
    assert plain.status_code == 201


async def test_a_document_ref_is_bounded_and_printable(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "b", format="B-{seq}")
    for ref in ("x" * 201, "", "line\nbreak"):
        response = await client.post(
            "/series/b/next", json={"document_ref": ref}, headers=tenant.issuer
        )
        assert_problem(response, 422, "invalid-request")


async def test_patch_attaches_a_reference_later_and_the_audit_keeps_the_one_replaced(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "p", format="P/{seq}")
    issued = await client.post("/series/p/next", json={}, headers=tenant.issuer)
    number = issued.json()["number"]
    for ref in ("INV-DRAFT-1", "INV-1", "INV-1"):
        response = await client.patch(
            f"/series/p/numbers/{number}", json={"document_ref": ref}, headers=tenant.issuer
        )
        assert response.status_code == 200, response.text
        assert response.json()["document_ref"] == ref
    assert (await entry(client, tenant, "p", "P%2F1"))["document_ref"] == "INV-1"
    audit = await client.get("/audit", params={"action": "number.annotated"}, headers=tenant.admin)
    details = [item["details"] for item in audit.json()["items"]]
    assert details == [
        {"number": "P/1", "document_ref": "INV-1", "previous": "INV-DRAFT-1"},
        {"number": "P/1", "document_ref": "INV-DRAFT-1", "previous": None},
    ]
    missing = await client.patch(
        "/series/p/numbers/P%2F99", json={"document_ref": "x"}, headers=tenant.issuer
    )
    assert_problem(missing, 404, "number-not-found")


async def test_the_csv_export_carries_references_and_filters_by_them(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "c", format="C-{seq}")
    await client.post("/series/c/next", json={"document_ref": "A"}, headers=tenant.issuer)
    await client.post("/series/c/next", json={"document_ref": "B"}, headers=tenant.issuer)
    response = await client.get(
        "/series/c/numbers",
        params={"format": "csv", "document_ref": "B"},
        headers=tenant.issuer,
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["number"], r["document_ref"], r["external"]) for r in rows] == [
        ("C-2", "B", "False")
    ]
