"""A rendered number is issued at most once over a series' whole life.

Each test here replays a way a number used to come out twice: a format change, a two-digit year,
variables sharing one counter, a structural change racing the first number. The stateful
property test in test_lifetime_property.py and the multi-process race in
test_lifetime_races.py drive the same rules at random.
"""

import asyncio
import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app import series as series_sql
from app.issuing.engine import DateWindow, Issuer
from app.migrate import load_migrations, migrate
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem
from tests.support.issuing import issue_plain

MODES = ["gapless", "sequence", "cached"]


async def issue(
    client: httpx.AsyncClient, tenant: Tenant, name: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(f"/series/{name}/next", json=body, headers=tenant.issuer)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def numbers_of(
    client: httpx.AsyncClient, tenant: Tenant, name: str, n: int, **body: Any
) -> list[str]:
    return [(await issue(client, tenant, name, **body))["number"] for _ in range(n)]


# --- format changes


@pytest.mark.parametrize("mode", MODES)
async def test_a_format_that_could_render_an_earlier_number_is_refused(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    """F-1{seq} issued F-11 and F-12; F-{seq} would issue them again as values 11 and 12."""
    await create_series(client, tenant, "f", format="F-1{seq}", mode=mode, ledger=True)
    first = await numbers_of(client, tenant, "f", 2)
    if mode != "cached":  # cached values come from blocks, not in the order of requests
        assert first == ["F-11", "F-12"]
    response = await client.patch("/series/f", json={"format": "F-{seq}"}, headers=tenant.admin)
    problem = assert_problem(response, 409, "format-conflict")
    assert "'F-1{seq}'" in problem["detail"] and "'F-{seq}'" in problem["detail"]
    later = await numbers_of(client, tenant, "f", 12)
    assert len(set(first + later)) == 14
    read = (await client.get("/series/f", headers=tenant.admin)).json()
    assert [f["format"] for f in read["formats"]] == ["F-1{seq}"]


async def test_a_format_with_a_new_literal_prefix_is_accepted_and_kept_in_the_history(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "f", format="F-{seq}", mode="gapless")
    assert await numbers_of(client, tenant, "f", 2) == ["F-1", "F-2"]
    changed = await client.patch("/series/f", json={"format": "G/{seq:04}"}, headers=tenant.admin)
    assert changed.status_code == 200, changed.text
    assert [f["format"] for f in changed.json()["formats"]] == ["F-{seq}", "G/{seq:04}"]
    assert await numbers_of(client, tenant, "f", 1) == ["G/0003"]
    # Back to the first format: nothing G/ can render is F-, so it is accepted too.
    again = await client.patch("/series/f", json={"format": "F-{seq}"}, headers=tenant.admin)
    assert again.status_code == 200, again.text
    assert await numbers_of(client, tenant, "f", 1) == ["F-4"]


async def test_widening_the_padding_is_accepted_since_any_common_string_is_the_same_value(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "f", format="INV-{seq:04}", mode="gapless")
    await numbers_of(client, tenant, "f", 1)
    changed = await client.patch("/series/f", json={"format": "INV-{seq:06}"}, headers=tenant.admin)
    assert changed.status_code == 200, changed.text
    assert await numbers_of(client, tenant, "f", 1) == ["INV-000002"]


async def test_a_format_dated_from_a_day_leaves_earlier_documents_in_their_format(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(
        client, tenant, "inv", format="INV-{YYYY}-{seq}", reset="yearly", mode="gapless"
    )
    assert (await issue(client, tenant, "inv", date="2026-11-02"))["number"] == "INV-2026-1"
    change = {"format": "INV/{YYYY}/{seq:05}", "effective_from": "2027-01-01"}
    changed = await client.patch("/series/inv", json=change, headers=tenant.admin)
    assert changed.status_code == 200, changed.text
    assert changed.json()["formats"][1] | {"set_at": None} == {
        "format": "INV/{YYYY}/{seq:05}",
        "effective_from": "2027-01-01",
        "set_at": None,
    }
    assert (await issue(client, tenant, "inv", date="2026-12-31"))["number"] == "INV-2026-2"
    assert (await issue(client, tenant, "inv", date="2027-01-01"))["number"] == "INV/2027/00001"
    assert (await issue(client, tenant, "inv", date="2026-12-30"))["number"] == "INV-2026-3"


async def test_effective_from_without_a_format_is_a_422(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "inv")
    response = await client.patch(
        "/series/inv", json={"effective_from": "2027-01-01"}, headers=tenant.admin
    )
    assert_problem(response, 422, "invalid-request")


# --- dates


@pytest.mark.parametrize("mode", MODES)
async def test_two_digit_years_issue_only_within_their_century(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    """S-{YY}-{seq} gave S-26-1 for 1926 and again for 2026; 2127 blocked 2027 for good."""
    await create_series(client, tenant, "s", format="S-{YY}-{seq}", reset="yearly", mode=mode)
    for date in ("1926-05-01", "2127-01-01", "1999-12-31", "2100-01-01"):
        response = await client.post("/series/s/next", json={"date": date}, headers=tenant.issuer)
        problem = assert_problem(response, 422, "invalid-request")
        assert problem["errors"][0]["field"] == "date", problem
    assert (await issue(client, tenant, "s", date="2026-05-01"))["number"] == "S-26-1"
    assert (await issue(client, tenant, "s", date="2027-05-01"))["number"] == "S-27-1"


async def test_dates_outside_the_service_window_are_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "s", format="S-{YYYY}-{seq}", reset="yearly")
    for date in ("0001-01-01", "1999-12-31", "2100-01-01", "9999-12-31"):
        response = await client.post("/series/s/next", json={"date": date}, headers=tenant.issuer)
        assert_problem(response, 422, "invalid-request")
    assert (await issue(client, tenant, "s", date="2000-01-01"))["number"] == "S-2000-1"


async def test_the_window_is_a_setting(
    tenant: Tenant, client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "s", format="S-{YYYY}-{seq}", reset="yearly")
    series = await series_sql.fetch(pool, tenant.id, "s")
    window = DateWindow(datetime.date(1990, 1, 1), datetime.date(2030, 12, 31))
    issuer = Issuer(pool, idempotency_ttl_seconds=60, window=window)
    answer = await issuer.issue(
        series,
        count=1,
        date=datetime.date(1995, 3, 1),
        variables={},
        claim=None,
        respond=lambda issued: b"",
    )
    assert answer.issued is not None and answer.issued.numbers == ["S-1995-1"]


# --- variables


@pytest.mark.parametrize("mode", MODES)
async def test_each_branch_counts_on_its_own(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "po", format="PO-{var:branch}-{seq:04}", mode=mode)
    branches = ["BR07", "BR08", "BR07", "BR07", "BR08"]
    got = [(await issue(client, tenant, "po", variables={"branch": b}))["number"] for b in branches]
    assert got == ["PO-BR07-0001", "PO-BR08-0001", "PO-BR07-0002", "PO-BR07-0003", "PO-BR08-0002"]
    read = (await client.get("/series/po", headers=tenant.admin)).json()
    if mode != "cached":  # cached counters show what was reserved, not what was issued
        assert read["counters"] == [
            {"period": "all", "variables": {"branch": "BR07"}, "last_value": 3},
            {"period": "all", "variables": {"branch": "BR08"}, "last_value": 2},
        ]


async def test_a_gapless_branch_has_no_hole_in_its_ledger_or_its_gap_report(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "po", format="PO-{var:branch}-{seq:04}", mode="gapless")
    for branch in ["BR07", "BR08", "BR07", "BR08", "BR07"]:
        await issue(client, tenant, "po", variables={"branch": branch})
    ledger = await client.get(
        "/series/po/numbers", params={"variables": "branch=BR07"}, headers=tenant.issuer
    )
    assert ledger.status_code == 200, ledger.text
    entries = ledger.json()["items"]
    assert [e["number"] for e in entries] == ["PO-BR07-0001", "PO-BR07-0002", "PO-BR07-0003"]
    assert {e["variables"]["branch"] for e in entries} == {"BR07"}
    gaps = await client.get(
        "/series/po/gaps",
        params={"period": "all", "variables": "branch=BR07"},
        headers=tenant.issuer,
    )
    assert gaps.json() | {"gaps": None} == {
        "period": "all",
        "variables": {"branch": "BR07"},
        "start": 1,
        "last_value": 3,
        "missing": 0,
        "runs": 0,
        "truncated": False,
        "gaps": None,
    }
    csv = await client.get("/series/po/numbers", headers=tenant.issuer | {"Accept": "text/csv"})
    assert "all,branch=BR08,2,PO-BR08-0002" in csv.text


async def test_a_shared_counter_runs_across_variable_values(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(
        client, tenant, "po", format="PO-{var:branch}-{seq:04}", shared_counter=True
    )
    got = [
        (await issue(client, tenant, "po", variables={"branch": b}))["number"]
        for b in ["BR07", "BR08", "BR07"]
    ]
    assert got == ["PO-BR07-0001", "PO-BR08-0002", "PO-BR07-0003"]


async def test_variables_that_could_render_alike_need_a_shared_counter(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """{var:a}{var:b}-{seq}: a=x, b=yz and a=xy, b=z both read xyz-1, from two counters."""
    body: dict[str, Any] = {"name": "v", "format": "{var:a}{var:b}-{seq}"}
    refused = await client.post("/series", json=body, headers=tenant.admin)
    problem = assert_problem(refused, 422, "invalid-request")
    assert problem["errors"][0]["field"] == "format", problem
    shared = await client.post(
        "/series", json=body | {"shared_counter": True}, headers=tenant.admin
    )
    assert shared.status_code == 201, shared.text


async def test_shared_counter_is_fixed_once_numbers_were_issued(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "po", format="PO-{var:b}-{seq}")
    await issue(client, tenant, "po", variables={"b": "x"})
    response = await client.patch("/series/po", json={"shared_counter": True}, headers=tenant.admin)
    assert_problem(response, 409, "series-in-use")


# --- administration racing requests


@pytest.mark.parametrize("new_mode", ["gapless", "cached"])
async def test_a_request_that_read_the_old_mode_takes_nothing_after_the_change(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, new_mode: str
) -> None:
    """A process still holding the sequence definition used to create the sequence and hand
    out R-1 after the series had become gapless, which then handed out R-1 again."""
    await create_series(client, tenant, "r", format="R-{seq}", mode="sequence")
    stale = await series_sql.fetch(pool, tenant.id, "r")
    changed = await client.patch("/series/r", json={"mode": new_mode}, headers=tenant.admin)
    assert changed.status_code == 200, changed.text
    issuer = Issuer(pool, idempotency_ttl_seconds=60)
    try:
        answer = await issue_plain(issuer, stale)
        assert answer.issued is not None
        numbers = [*answer.issued.numbers, (await issue(client, tenant, "r"))["number"]]
    finally:
        await issuer.close()
    # Each issuer reserves its own block in cached mode: the second number is further on.
    assert numbers[0] == "R-1" and numbers[1] == ("R-2" if new_mode == "gapless" else "R-101")
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'docnum_seq_%' AND relname = ANY("
            "SELECT 'docnum_seq_' || id FROM counters WHERE series_id = $1)",
            stale.id,
        )
        == 0
    )


async def test_a_structural_change_waits_for_a_request_that_holds_the_series_and_then_refuses(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """The issuing statement holds the series row FOR KEY SHARE until it commits; the change
    takes it FOR UPDATE, so it sees the counter the request created and refuses."""
    await create_series(client, tenant, "r", format="R-{seq}", mode="gapless")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT 1 FROM series WHERE tenant_id = $1 AND name = 'r' FOR KEY SHARE", tenant.id
        )
        await conn.execute(
            "INSERT INTO counters (series_id, period, last_value)"
            " SELECT id, 'all', 1 FROM series WHERE tenant_id = $1 AND name = 'r'",
            tenant.id,
        )
        change = asyncio.create_task(
            client.patch("/series/r", json={"step": 2}, headers=tenant.admin)
        )
        await asyncio.sleep(0.2)
        assert not change.done()  # it waits for the lock
    assert_problem(await change, 409, "series-in-use")


# --- existing data


async def test_series_that_issued_before_the_upgrade_keep_one_shared_counter(
    empty_database_url: str, tmp_path: Path
) -> None:
    shipped = load_migrations()
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, shipped[:1])
        tenant = await conn.fetchval("INSERT INTO tenants (name) VALUES ('t') RETURNING id")
        insert = (
            "INSERT INTO series (tenant_id, name, format, mode, reset, start, step, timezone,"
            " ledger) VALUES ($1, $2, $3, 'gapless', 'never', 1, 1, 'UTC', true) RETURNING id"
        )
        used = await conn.fetchval(insert, tenant, "used", "PO-{var:b}-{seq}")
        fresh = await conn.fetchval(insert, tenant, "fresh", "PO-{var:b}-{seq}")
        await conn.execute(
            "INSERT INTO counters (series_id, period, last_value) VALUES ($1, 'all', 2)", used
        )
        await conn.execute(
            "INSERT INTO numbers (series_id, period, value, number, date) VALUES"
            " ($1, 'all', 1, 'PO-x-1', '2026-01-01'), ($1, 'all', 2, 'PO-y-2', '2026-01-01')",
            used,
        )
        assert await migrate(conn) == [m.name for m in shipped[1:]]
        rows = await conn.fetch("SELECT id, shared_counter, version FROM series ORDER BY id")
        assert [tuple(r) for r in rows] == [(used, True, 1), (fresh, False, 1)]
        formats = await conn.fetch("SELECT series_id, format, effective_from FROM series_formats")
        assert sorted(tuple(r) for r in formats) == [
            (used, "PO-{var:b}-{seq}", None),
            (fresh, "PO-{var:b}-{seq}", None),
        ]
        assert await conn.fetchval("SELECT array_agg(variables) FROM numbers") == ["", ""]
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(empty_database_url, min_size=1, max_size=2)
    issuer = Issuer(pool, idempotency_ttl_seconds=60)
    try:
        for name, expected in [("used", "PO-z-3"), ("fresh", "PO-z-1")]:
            series = await series_sql.fetch(pool, tenant, name)
            answer = await issue_plain(issuer, series, variables={"b": "z"})
            assert answer.issued is not None and answer.issued.numbers == [expected]
    finally:
        await issuer.close()
        await pool.close()
