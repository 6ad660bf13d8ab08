"""The hash chain of gapless ledgers: what it records, every kind of tampering with the ledger or
the chain found by ``verify``, the CSV's marks, and the auditor's ZIP verified offline by the
program in docs/ledger-chain.md."""

import asyncio
import csv
import datetime
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app import auditor, chain
from app.definition import CounterKey
from app.migrate import load_migrations, migrate
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ledger-chain.md"


async def issue(client: httpx.AsyncClient, tenant: Tenant, count: int, **body: Any) -> list[str]:
    response = await client.post(
        "/series/c/batch",
        json={"count": count, "date": "2026-05-01", **body},
        headers=tenant.issuer,
    )
    assert response.status_code == 201, response.text
    numbers: list[str] = response.json()["numbers"]
    return numbers


async def void(client: httpx.AsyncClient, tenant: Tenant, number: str, reason: str) -> None:
    response = await client.post(
        f"/series/c/numbers/{number}/void", json={"reason": reason}, headers=tenant.admin
    )
    assert response.status_code == 200, response.text


async def verify(client: httpx.AsyncClient, tenant: Tenant, **params: str) -> dict[str, Any]:
    """Of the current period, unless ``period`` names one."""
    response = await client.get("/series/c/verify", params=params, headers=tenant.issuer)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


async def a_voided_ledger(client: httpx.AsyncClient, tenant: Tenant) -> None:
    """Ten numbers of 2026, the fourth voided: events 1 to 10 issued, 11 voided."""
    await create_series(client, tenant, "c", format="C-{YYYY}-{seq:04}", reset="yearly")
    await issue(client, tenant, 6)
    for _ in range(4):
        response = await client.post(
            "/series/c/next", json={"date": "2026-05-02"}, headers=tenant.issuer
        )
        assert response.status_code == 201, response.text
    await void(client, tenant, "C-2026-0004", "Cancelled → reissued")


async def series_id(pool: asyncpg.Pool, tenant: Tenant) -> int:
    found: int = await pool.fetchval(
        "SELECT id FROM series WHERE tenant_id = $1 AND name = 'c'", tenant.id
    )
    return found


async def test_issuing_and_voiding_chain_every_event_and_verify_intact(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await a_voided_ledger(client, tenant)
    report = await verify(client, tenant, period="2026")
    assert report["intact"] is True, report["counters"][0]["broken"]
    [counter] = report["counters"]
    assert counter["events"] == 11 and counter["broken"] is None
    rows = await pool.fetch(
        "SELECT e.seq, e.kind, e.value, e.content, e.hash FROM ledger_events AS e "
        "JOIN counters AS c ON c.id = e.counter_id WHERE c.series_id = $1 ORDER BY e.seq",
        await series_id(pool, tenant),
    )
    assert [(r["seq"], r["kind"], r["value"]) for r in rows] == [
        *((i, "issued", i) for i in range(1, 11)),
        (11, "voided", 4),
    ]
    previous = chain.GENESIS
    for row in rows:  # the algorithm as documented, from the stored content
        previous = hashlib.sha256(previous + row["content"].encode()).digest()
        assert previous == row["hash"]
    assert counter["head"] == previous.hex()
    voided = json.loads(rows[-1]["content"])
    assert voided["row"]["status"] == "voided"
    assert voided["row"]["void_reason"] == "Cancelled → reissued"
    assert rows[-1]["content"] == chain.encode(voided)  # canonical: sorted, compact


Tamper = Callable[[asyncpg.Pool, int], Awaitable[object]]
ROWS = "UPDATE numbers SET {} WHERE series_id = $1 AND value = {}"
EVENTS = (
    "{} ledger_events WHERE counter_id = (SELECT id FROM counters WHERE series_id = $1) "
    "AND seq = {}"
)


def sql(statement: str) -> Tamper:
    async def run(pool: asyncpg.Pool, series: int) -> object:
        return await pool.execute(statement, series)

    return run


async def append_a_forged_event(pool: asyncpg.Pool, series: int) -> None:
    """An event added after the last one, its hash computed right; the head left alone."""
    counter = await pool.fetchrow(
        "SELECT id, chain_seq, chain_head FROM counters WHERE series_id = $1", series
    )
    content = chain.encode({"kind": "voided", "row": {"value": 5}})
    forged = hashlib.sha256(counter["chain_head"] + content.encode()).digest()
    await pool.execute(
        "INSERT INTO ledger_events VALUES ($1, $2, 'voided', 5, $3, $4)",
        counter["id"],
        counter["chain_seq"] + 1,
        content,
        forged,
    )


async def rewrite_a_row_with_its_mark(pool: asyncpg.Pool, series: int) -> None:
    """A voided row put back to issued, marked with its own issued event as if never voided."""
    issued = await pool.fetchval(
        "SELECT hash FROM ledger_events WHERE seq = 4 AND counter_id = "
        "(SELECT id FROM counters WHERE series_id = $1)",
        series,
    )
    await pool.execute(
        "UPDATE numbers SET status = 'issued', void_reason = NULL, voided_at = NULL, "
        "chain_seq = 4, chain_hash = $2 WHERE series_id = $1 AND value = 4",
        series,
        issued,
    )


# What each edit does, and the first broken link verify must name: (problem, seq, value).
TAMPERING: dict[str, tuple[Tamper, tuple[str, int | None, int | None]]] = {
    "a number edited": (sql(ROWS.format("number = 'C-2026-0099'", 7)), ("row-altered", 7, 7)),
    "a date edited": (sql(ROWS.format("date = date '2026-04-30'", 2)), ("row-altered", 2, 2)),
    "an issue time edited": (
        sql(ROWS.format("issued_at = issued_at - interval '1 microsecond'", 9)),
        ("row-altered", 9, 9),
    ),
    "a void reason edited": (
        sql(ROWS.format("void_reason = 'typo'", 4)),
        ("row-altered", 11, 4),
    ),
    "a void undone": (
        sql(ROWS.format("status = 'issued', void_reason = NULL, voided_at = NULL", 4)),
        ("row-altered", 11, 4),
    ),
    "a void undone, the row marked with its issued event": (
        rewrite_a_row_with_its_mark,
        ("row-altered", 11, 4),
    ),
    "a row's hash edited": (
        sql(ROWS.format("chain_hash = sha256(chain_hash)", 3)),
        ("row-altered", 3, 3),
    ),
    "a row deleted": (
        sql("DELETE FROM numbers WHERE series_id = $1 AND value = 6"),
        ("row-missing", 6, 6),
    ),
    "a row inserted": (
        sql(
            "INSERT INTO numbers (series_id, period, value, number, date) "
            "VALUES ($1, '2026', 11, 'C-2026-0011', date '2026-05-03')"
        ),
        ("row-unrecorded", None, 11),
    ),
    "a row inserted as a copy of another's marks": (
        sql(
            "INSERT INTO numbers (series_id, period, value, number, date, chain_seq, chain_hash) "
            "SELECT series_id, period, 0, 'C-2026-0000', date, chain_seq, chain_hash "
            "FROM numbers WHERE series_id = $1 AND value = 1"
        ),
        ("row-unrecorded", None, 0),
    ),
    "an event's content edited": (
        sql(
            EVENTS.format("UPDATE", 5).replace(
                " WHERE", " SET content = replace(content, 'C-2026-0005', 'C-2026-0050') WHERE", 1
            )
        ),
        ("event-altered", 5, 5),
    ),
    "an event deleted": (sql(EVENTS.format("DELETE FROM", 8)), ("event-missing", 8, None)),
    "the last event deleted": (sql(EVENTS.format("DELETE FROM", 11)), ("head-moved", 11, None)),
    "an event appended": (append_a_forged_event, ("head-moved", 12, None)),
    "the head moved back": (
        sql("UPDATE counters SET chain_seq = chain_seq - 1 WHERE series_id = $1"),
        ("head-moved", 11, None),
    ),
}


@pytest.mark.parametrize("edit", list(TAMPERING))
async def test_every_kind_of_sql_edit_is_named_as_the_first_broken_link(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, edit: str
) -> None:
    await a_voided_ledger(client, tenant)
    assert (await verify(client, tenant, period="2026"))["intact"] is True
    tamper, (problem, seq, value) = TAMPERING[edit]
    await tamper(pool, await series_id(pool, tenant))
    report = await verify(client, tenant, period="2026")
    assert report["intact"] is False
    broken = report["counters"][0]["broken"]
    assert (broken["problem"], broken["seq"], broken["value"]) == (problem, seq, value), broken
    assert broken["detail"]
    if problem == "row-altered" and broken["expected"].startswith("{"):
        assert json.loads(broken["expected"]) != json.loads(broken["found"])


async def test_verify_names_the_counter_and_stays_intact_on_the_others(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "c", format="{var:branch}-{seq:03}")
    for branch in ("A", "B"):
        await issue(client, tenant, 3, variables={"branch": branch})
    await pool.execute(
        "UPDATE numbers SET number = 'B-999' WHERE series_id = $1 AND number = 'B-002'",
        await series_id(pool, tenant),
    )
    report = await verify(client, tenant)
    assert [(c["variables"], c["intact"]) for c in report["counters"]] == [
        ("branch=A", True),
        ("branch=B", False),
    ]
    only_a = await verify(client, tenant, variables="branch=A")
    assert only_a["intact"] is True and len(only_a["counters"]) == 1


async def test_a_batch_of_ten_thousand_is_one_chain(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "c")
    await issue(client, tenant, 10_000)
    await issue(client, tenant, 1)
    report = await verify(client, tenant)
    assert report["intact"] is True
    assert report["counters"][0]["events"] == 10_001


async def test_requests_of_one_group_with_references_of_any_text_are_chained_as_issued(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """Contents travel to the database joined by a control character, which canonical JSON never
    holds unescaped, whatever the reference (quotes, backslashes, any script); concurrent
    requests of one group each keep their own date and reference."""
    await create_series(client, tenant, "c", format="C-{seq}")
    references = ['"quoted"', "back\\slash", "\ue000 private use", "plain", "é ✓ \\u001e"]

    async def one(index: int, reference: str) -> list[str]:
        body = {"document_ref": reference, "date": f"2026-05-0{index + 1}"}
        return await issue(client, tenant, 1 + index * 50, **body)

    issued = await asyncio.gather(*(one(i, r) for i, r in enumerate(references)))
    report = await verify(client, tenant, period="all")
    assert report["intact"] is True, report
    assert report["counters"][0]["events"] == sum(len(numbers) for numbers in issued)
    for (index, reference), numbers in zip(enumerate(references), issued, strict=True):
        for number in (numbers[0], numbers[-1]):
            entry = (await client.get(f"/series/c/numbers/{number}", headers=tenant.issuer)).json()
            assert (entry["document_ref"], entry["date"]) == (reference, f"2026-05-0{index + 1}")


async def test_series_and_counters_are_never_deleted_so_no_ledger_row_loses_its_parent(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, empty_database_url: str
) -> None:
    await create_series(client, tenant, "c")
    await issue(client, tenant, 3)
    async with pool.acquire() as conn:
        for table, column in (("series", "id"), ("counters", "series_id")):
            with pytest.raises(asyncpg.RestrictViolationError, match="never deleted"):
                async with conn.transaction():
                    await conn.execute(
                        f"DELETE FROM {table} WHERE {column} = $1", await series_id(pool, tenant)
                    )
    empty = await asyncpg.connect(empty_database_url)
    try:
        await migrate(empty, load_migrations())
        for table in ("series", "counters"):
            with pytest.raises(asyncpg.RestrictViolationError, match="never deleted"):
                await empty.execute(f"TRUNCATE {table} CASCADE")
    finally:
        await empty.close()


@pytest.mark.parametrize("mode", ["sequence", "cached"])
async def test_series_that_keep_no_chain_say_so(
    client: httpx.AsyncClient, tenant: Tenant, mode: str
) -> None:
    await create_series(client, tenant, "c", mode=mode, ledger=True)
    await issue(client, tenant, 2)
    response = await client.get("/series/c/verify", headers=tenant.issuer)
    assert_problem(response, 409, "not-chained")
    response = await client.get("/series/c/export", headers=tenant.admin)
    assert_problem(response, 409, "not-chained")


async def test_the_zip_needs_an_admin_key(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create_series(client, tenant, "c")
    response = await client.get("/series/c/export", headers=tenant.issuer)
    assert_problem(response, 403, "forbidden")


async def test_the_csv_marks_each_row_with_its_last_event(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await a_voided_ledger(client, tenant)
    response = await client.get(
        "/series/c/numbers", params={"format": "csv"}, headers=tenant.issuer
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    events = {
        r["seq"]: (r["value"], r["hash"].hex())
        for r in await pool.fetch(
            "SELECT seq, value, hash FROM ledger_events WHERE counter_id = "
            "(SELECT id FROM counters WHERE series_id = $1)",
            await series_id(pool, tenant),
        )
    }
    assert [int(r["chain_seq"]) for r in rows] == [1, 2, 3, 11, 5, 6, 7, 8, 9, 10]
    for row in rows:
        assert events[int(row["chain_seq"])] == (int(row["value"]), row["chain_hash"])


def offline_verifier() -> Callable[[str], dict[str, tuple[int, str]]]:
    """The program docs/ledger-chain.md gives auditors, as it is written there."""
    text = DOCS.read_text()
    [program] = [
        block
        for block in re.findall(r"```python\n(.*?)```", text, re.S)
        if "def verify_zip" in block
    ]
    scope: dict[str, Any] = {"__name__": "docs"}
    exec(compile(program, str(DOCS), "exec"), scope)
    verify_zip: Callable[[str], dict[str, tuple[int, str]]] = scope["verify_zip"]
    return verify_zip


async def export(client: httpx.AsyncClient, tenant: Tenant, path: Path) -> zipfile.ZipFile:
    response = await client.get("/series/c/export?period=2026", headers=tenant.admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert 'filename="c-2026-audit.zip"' in response.headers["content-disposition"]
    await asyncio.to_thread(path.write_bytes, response.content)
    return zipfile.ZipFile(path)


async def test_the_auditors_zip_verifies_offline_with_the_documented_program(
    client: httpx.AsyncClient, tenant: Tenant, tmp_path: Path
) -> None:
    await a_voided_ledger(client, tenant)
    response = await client.patch(
        "/series/c", json={"description": "Invoices"}, headers=tenant.admin
    )
    assert response.status_code == 200, response.text
    bundle = await export(client, tenant, tmp_path / "audit.zip")
    assert sorted(bundle.namelist()) == [
        "chain.csv",
        "configuration.json",
        "gaps.json",
        "head.json",
        "ledger.csv",
        "voids.csv",
    ]
    voids = list(csv.DictReader(io.StringIO(bundle.read("voids.csv").decode())))
    assert [(v["number"], v["void_reason"]) for v in voids] == [
        ("C-2026-0004", "Cancelled → reissued")
    ]
    gaps = json.loads(bundle.read("gaps.json"))
    assert [(g["variables"], g["missing"], g["last_value"]) for g in gaps] == [({}, 0, 10)]
    configuration = json.loads(bundle.read("configuration.json"))
    assert configuration["series"]["description"] == "Invoices"
    assert [e["action"] for e in configuration["history"]] == ["series.created", "series.changed"]
    head = json.loads(bundle.read("head.json"))
    assert head["verification"]["intact"] is True
    [counter] = head["counters"]
    assert counter["events"] == 11
    assert offline_verifier()(str(tmp_path / "audit.zip")) == {"": (11, counter["head"])}


async def test_a_zip_far_larger_than_what_memory_holds_arrives_whole_and_verifies(
    client: httpx.AsyncClient, tenant: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files and ZIP kept in memory up to 1 KB only, events read 7 at a time, sent in chunks of
    100 bytes: everything goes through temporary files and cursor pages, and nothing is lost."""
    monkeypatch.setattr(auditor, "SPOOL_BYTES", 1024)
    monkeypatch.setattr(auditor, "CURSOR_ROWS", 7)
    monkeypatch.setattr(auditor, "CHUNK_BYTES", 100)
    await create_series(client, tenant, "c", format="C-{YYYY}-{seq:05}", reset="yearly")
    await issue(client, tenant, 2_500)
    await void(client, tenant, "C-2026-01234", "Printed twice")
    response = await client.get("/series/c/export?period=2026", headers=tenant.admin)
    assert response.status_code == 200, response.text
    assert int(response.headers["content-length"]) == len(response.content) > 100 * 1024
    await asyncio.to_thread((tmp_path / "audit.zip").write_bytes, response.content)
    bundle = zipfile.ZipFile(tmp_path / "audit.zip")
    ledger_rows = list(csv.DictReader(io.StringIO(bundle.read("ledger.csv").decode())))
    assert [row["number"] for row in ledger_rows] == [f"C-2026-{i:05}" for i in range(1, 2_501)]
    events = list(csv.DictReader(io.StringIO(bundle.read("chain.csv").decode())))
    assert [int(e["seq"]) for e in events] == list(range(1, 2_502))
    [counter] = json.loads(bundle.read("head.json"))["counters"]
    assert offline_verifier()(str(tmp_path / "audit.zip")) == {"": (2_501, counter["head"])}


@pytest.mark.parametrize(
    "edit",
    ["a number edited", "a row deleted", "a row inserted", "an event deleted", "an event appended"],
)
async def test_the_documented_program_finds_tampering_in_a_zip(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, tmp_path: Path, edit: str
) -> None:
    await a_voided_ledger(client, tenant)
    tamper, _ = TAMPERING[edit]
    await tamper(pool, await series_id(pool, tenant))
    await export(client, tenant, tmp_path / "audit.zip")
    with pytest.raises(AssertionError):
        offline_verifier()(str(tmp_path / "audit.zip"))


CHAINED_FROM = "0008"  # the migration that brings the chain
OLD_SERIES = """
INSERT INTO series (tenant_id, name, format, mode, reset, start, step, timezone, ledger)
VALUES ($1, $2, 'S-{seq}', $3, 'never', 1, 1, 'UTC', true) RETURNING id
"""
OLD_ROWS = """
WITH counter AS (
    INSERT INTO counters (series_id, period, variables, last_value) VALUES ($1, 'all', '', 4)
)
INSERT INTO numbers
    (series_id, period, value, number, date, issued_at, status, void_reason, voided_at,
     document_ref)
VALUES
    ($1, 'all', 2, 'S-"2"', '2025-01-02', '2025-01-02 10:00:00.5+01', 'issued', NULL, NULL,
     'inv\\42'),
    ($1, 'all', 1, 'S-1', '2025-01-01', '2025-01-01 09:00:00+00', 'voided', E'Doublon\té 😀',
     '2025-01-03 00:00:00+00', NULL),
    ($1, 'all', 3, 'S-3', '2025-01-03', '2025-01-03 09:00:00+00', 'issued', NULL, NULL, NULL)
"""


async def test_rows_from_before_the_chain_are_chained_at_the_upgrade_and_verify_intact(
    empty_database_url: str,
) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        shipped = load_migrations()
        await migrate(conn, [m for m in shipped if m.name < CHAINED_FROM])
        tenant = await conn.fetchval("INSERT INTO tenants (name) VALUES ('t') RETURNING id")
        gapless = await conn.fetchval(OLD_SERIES, tenant, "g", "gapless")
        sequence = await conn.fetchval(OLD_SERIES, tenant, "s", "sequence")
        for series in (gapless, sequence):
            await conn.execute(OLD_ROWS, series)
        await migrate(conn, shipped)

        events = await conn.fetch(
            "SELECT e.seq, e.kind, e.value FROM ledger_events AS e "
            "JOIN counters AS c ON c.id = e.counter_id WHERE c.series_id = $1 ORDER BY e.seq",
            gapless,
        )
        assert [tuple(e) for e in events] == [
            (1, "recorded", 1),
            (2, "recorded", 2),
            (3, "recorded", 3),
        ]
        assert not await conn.fetchval(
            "SELECT count(*) FROM ledger_events AS e JOIN counters AS c ON c.id = e.counter_id "
            "WHERE c.series_id = $1",
            sequence,
        )
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            [counter] = await chain.verify(conn, gapless, "all", None)
        assert (counter.intact, counter.events) == (True, 3), counter

        await conn.execute("UPDATE numbers SET void_reason = 'x' WHERE series_id = $1", gapless)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            [counter] = await chain.verify(conn, gapless, "all", None)
        assert counter.broken is not None
        assert (counter.broken.problem, counter.broken.seq) == ("row-altered", 1)
    finally:
        await conn.close()


TRICKY_TEXT = [
    'quote " and backslash \\ and slash /',
    "controls \x01\x1f\b\f\n\r\t and DEL \x7f",
    "non-ASCII é € 😀 \u2028 \ue000",
    "'=formula",
]


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_the_fast_encodings_are_the_canonical_json(text: str) -> None:
    row: dict[str, Any] = {
        "date": datetime.date(2026, 1, 2),
        "document_ref": text,
        "external": True,
        "issued_at": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "number": text,
        "period": "2026",
        "status": "voided",
        "value": 9,
        "variables": "a=1,b=2",
        "void_reason": text,
        "voided_at": datetime.datetime(2026, 1, 2, 4, 4, 5, 7, tzinfo=datetime.UTC),
    }
    state = {
        name: chain.timestamp(v)
        if isinstance(v, datetime.datetime)
        else str(v)
        if isinstance(v, datetime.date)
        else v
        for name, v in row.items()
    }
    assert chain.event("voided", row=row).content == chain.encode({"kind": "voided", "row": state})
    numbers = [(1, text), (2, "plain"), (3, text + "\ue000")]
    alike = {**row, "document_ref": None, "void_reason": None, "voided_at": None}
    assert chain.events_of("issued", alike, numbers) == [
        chain.event("issued", row={**alike, "value": v, "number": n}) for v, n in numbers
    ]


@pytest.mark.parametrize("text", TRICKY_TEXT)
async def test_the_database_renders_rows_as_the_application_encodes_them(
    client: httpx.AsyncClient, tenant: Tenant, text: str
) -> None:
    await create_series(client, tenant, "c", format="{var:n}-{seq}")
    for value in ("a", "b"):
        response = await client.post(
            "/series/c/next", json={"variables": {"n": value}}, headers=tenant.issuer
        )
        assert response.status_code == 201, response.text
    response = await client.post(
        "/series/c/numbers/b-1/void",
        json={"reason": text.replace("\x7f", "")},
        headers=tenant.admin,
    )
    if response.status_code == 422:  # a reason the API refuses cannot reach the ledger
        return
    assert response.status_code == 200, response.text
    assert (await verify(client, tenant))["intact"] is True


async def test_a_new_kind_of_event_is_one_call_and_verifies(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """Events another part of the ledger may add: one that changes a row, one that removes it,
    one of the counter itself; each appended with one call, after the change."""
    await create_series(client, tenant, "c")
    await issue(client, tenant, 3)
    series = await series_id(pool, tenant)
    counter = CounterKey("all", "")
    async with pool.acquire() as conn, conn.transaction():
        changed = await conn.fetchrow(
            "UPDATE numbers SET document_ref = 'invoice 17' WHERE series_id = $1 AND value = 1 "
            "RETURNING *",
            series,
        )
        await conn.execute("DELETE FROM numbers WHERE series_id = $1 AND value = 3", series)
        head = await chain.append(
            conn,
            series,
            counter,
            [
                chain.event("referenced", row=changed),
                chain.event("released", value=3),
                chain.event("counter-set", last_value=2),
            ],
        )
    assert head.seq == 6
    report = await verify(client, tenant)
    assert report["intact"] is True, report["counters"][0]["broken"]
    assert report["counters"][0]["head"] == head.hash.hex()
    await pool.execute("UPDATE numbers SET document_ref = NULL WHERE series_id = $1", series)
    broken = (await verify(client, tenant))["counters"][0]["broken"]
    assert (broken["problem"], broken["seq"]) == ("row-altered", 4)


async def test_numbering_by_hand_and_document_references_are_chained_and_verify_intact(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    await create_series(client, tenant, "c", format="C-{YYYY}-{seq:04}", reset="yearly")
    await issue(client, tenant, 2)
    steps = [
        client.put(
            "/series/c/counters/2026",
            json={"last_value": 5, "reason": "go-live", "date": "2026-05-01"},
            headers=tenant.admin,
        ),
        client.post(
            "/series/c/numbers",
            json={"number": "C-2026-0004", "date": "2026-05-01", "document_ref": "paper-4"},
            headers=tenant.admin,
        ),
        client.post(
            "/series/c/numbers",
            json={"number": "C-2026-0008", "date": "2026-05-01"},
            headers=tenant.admin,
        ),
        client.patch(
            "/series/c/numbers/C-2026-0001", json={"document_ref": "SO-1"}, headers=tenant.issuer
        ),
    ]
    for step in steps:
        response = await step
        assert response.status_code in (200, 201), response.text
    await issue(client, tenant, 1, document_ref="SO-9")
    report = await verify(client, tenant, period="2026")
    assert report["intact"] is True, report["counters"][0]["broken"]
    kinds = await pool.fetch(
        "SELECT e.kind, e.value FROM ledger_events AS e JOIN counters AS c ON c.id = e.counter_id "
        "WHERE c.series_id = $1 ORDER BY e.seq",
        await series_id(pool, tenant),
    )
    assert [(r["kind"], r["value"]) for r in kinds] == [
        ("issued", 1),
        ("issued", 2),
        *(("skipped", v) for v in (3, 4, 5)),
        ("counter-set", None),
        ("external", 4),
        *(("skipped", v) for v in (6, 7)),
        ("external", 8),
        ("annotated", 1),
        ("issued", 9),
    ]
