"""The ledger of issued numbers: recording, reading, voiding and finding gaps.

Gapless series record every number in the transaction that issues it. A voided number stays in
the ledger with its reason, so an auditor sees every value accounted for.

Every change of a gapless ledger appends an event to its counter's hash chain (``app.chain``) in
the transaction that makes it: recording numbers, in the one statement that inserts them; voiding,
under the counter's lock, taken before the row's so that the lock order is the issuing one. A
change made by hand (voiding, a document reference, and ``app.issuing.manual``'s counters set
and numbers recorded) goes through ``record_change``, which chains it (gapless) and audits it in
that same transaction.
"""

import csv
import datetime
import io
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from app import audit, chain, cursors
from app.database import Connection, Executor
from app.definition import CounterKey, Series
from app.issuing.issued import Issued
from app.problems import (
    AlreadyVoided,
    NotGapless,
    NumberCollision,
    NumberNotFound,
    NumberReserved,
)
from app.schemas import (
    COUNTER_VARIABLES_PATTERN,
    MAX_BIGINT,
    MAX_GAP_RUNS,
    PERIOD_PATTERN,
    Gap,
    GapReport,
    LedgerEntry,
    encode_variables,
)

# Reserved numbers ($9 true for each) are recorded with the status 'reserved'.
INSERT_NUMBERS = """
INSERT INTO numbers (series_id, period, variables, value, number, date, issued_at, document_ref,
                     status)
SELECT $1, $2, $3, value, number, date, $7, document_ref,
       CASE WHEN reserved THEN 'reserved' ELSE 'issued' END
FROM unnest($4::bigint[], $5::text[], $6::date[], $8::text[], $9::boolean[])
    AS u (value, number, date, document_ref, reserved)
"""
# The same for a gapless series, with the numbers' events: each row marked with its event, the
# events stored after the head ($14: counter id, $15: seq), the head moved to ($16, $17). What is
# the same for all numbers of a request comes once per request (its first value, count, date,
# document reference and whether it reserves: $4, $5, $6, $8, $9), its values being a run of the
# series' step ($10); what differs per number comes packed, the cheapest way to send 10,000 of
# them: the numbers ($11), the events' contents joined by the separator $13 ($12), and their
# 32-byte hashes end to end ($18).
INSERT_CHAINED_NUMBERS = f"""
WITH request AS (
    SELECT first, count, date, document_ref,
           CASE WHEN reserved THEN 'reserved' ELSE 'issued' END AS status,
           (sum(count) OVER (ORDER BY position))::bigint - count AS before
    FROM unnest($4::bigint[], $5::bigint[], $6::date[], $8::text[], $9::boolean[])
        WITH ORDINALITY AS r (first, count, date, document_ref, reserved, position)
),
given AS (
    SELECT number, content, position
    FROM unnest($11::text[], string_to_array($12::text, $13::text))
        WITH ORDINALITY AS g (number, content, position)
),
numbered AS (
    SELECT p AS position, r.first + (p - r.before - 1) * $10::bigint AS value, r.date,
           r.document_ref, r.status, g.number, g.content,
           substring($18::bytea FROM ((p - 1) * 32 + 1)::integer FOR 32) AS hash
    FROM request AS r
    CROSS JOIN LATERAL generate_series(r.before + 1, r.before + r.count) AS p
    JOIN given AS g ON g.position = p
),
recorded AS (
    INSERT INTO numbers (
        series_id, period, variables, value, number, date, issued_at, document_ref, status,
        chain_seq, chain_hash
    )
    SELECT $1, $2, $3, value, number, date, $7, document_ref, status, $15 + position, hash
    FROM numbered
),
{
    chain.APPEND_EVENTS.format(
        counter="$14",
        seq="$15",
        source="(SELECT position, status AS kind, value, content, hash FROM numbered) AS e",
    )
}
{chain.MOVE_HEAD.format(counter="$14", new_seq="$16", new_head="$17")}
"""
ENTRY_COLUMNS = (
    "value, number, period, variables, date, status, issued_at, void_reason, voided_at, "
    "document_ref, external"
)
# Keyset paging on the primary key: stable under concurrent inserts, no OFFSET scans. $2 and $3
# filter by counter (period, variables), $4 by status, $9 by document reference (its index
# finds the few entries of one document). With each row's chain marks, for the CSV.
SELECT_PAGE = f"""
SELECT {ENTRY_COLUMNS}, chain_seq, chain_hash
FROM numbers
WHERE series_id = $1
  AND ($2::text IS NULL OR period = $2)
  AND ($3::text IS NULL OR variables = $3)
  AND ($4::text IS NULL OR status = $4)
  AND ($9::text IS NULL OR document_ref = $9)
  AND (period, variables, value) > ($5, $6, $7)
ORDER BY period, variables, value
LIMIT $8
"""
# The whole row: the chain records it as it now is, and the API shows its ENTRY_COLUMNS.
VOID_NUMBER = """
UPDATE numbers SET status = 'voided', void_reason = $3, voided_at = now()
WHERE series_id = $1 AND number = $2 AND status = 'issued'
RETURNING *
"""
# Sets the document reference of one number; the previous one is read from the row as it was.
ANNOTATE_NUMBER = f"""
UPDATE numbers AS n SET document_ref = $3
FROM (SELECT document_ref FROM numbers WHERE series_id = $1 AND number = $2 FOR UPDATE) AS old
WHERE n.series_id = $1 AND n.number = $2
RETURNING old.document_ref AS previous, {", ".join("n." + c for c in ENTRY_COLUMNS.split(", "))}
"""
# Which counter a number belongs to.
NUMBER_COUNTER = "SELECT period, variables FROM numbers WHERE series_id = $1 AND number = $2"
# One number, by the unique (series_id, number) index.
SELECT_NUMBER = f"SELECT {ENTRY_COLUMNS} FROM numbers WHERE series_id = $1 AND number = $2"
NUMBER_STATUS = "SELECT status FROM numbers WHERE series_id = $1 AND number = $2"
# Runs of missing values between consecutive recorded ones, plus after the last recorded, each
# with the totals over every run (window aggregates, computed before LIMIT cuts the list). The
# arithmetic runs in numeric: the value after the last one recorded may lie past the bigint limit.
SELECT_GAPS = """
WITH recorded AS (
    SELECT value::numeric AS value, lag(value::numeric) OVER (ORDER BY value) AS previous
    FROM numbers WHERE series_id = $1 AND period = $2 AND variables = $3
),
runs AS (
    SELECT coalesce(previous + $5, $4) AS first, value - $5 AS last
    FROM recorded
    WHERE value > coalesce(previous + $5, $4)
    UNION ALL
    SELECT coalesce(max(value) + $5, $4), $6 FROM recorded
    HAVING coalesce(max(value) + $5, $4) <= $6
)
SELECT first::bigint, last::bigint, count(*) OVER () AS runs,
       sum(div(last - first, $5) + 1) OVER () AS missing
FROM runs
ORDER BY first
LIMIT $7
"""
COUNTER_TOP = """
SELECT last_value FROM counters WHERE series_id = $1 AND period = $2 AND variables = $3
"""
SEQUENCE_TOP = """
SELECT pg_sequence_last_value(('docnum_seq_' || id)::regclass)
FROM counters WHERE series_id = $1 AND period = $2 AND variables = $3
"""


def _first_of_run(item: Issued, step: int) -> int:
    """The first of ``item``'s values, which are a run of ``step`` (checked at its ends)."""
    first, last = item.values[0], item.values[-1]
    if last != first + (len(item.values) - 1) * step:
        raise ValueError(f"values {first}..{last} are not a run of step {step}")
    return first


def issued_events(counter: CounterKey, issued: list[Issued]) -> list[chain.Event]:
    """The ``issued`` event of each number (``reserved`` for a reserved one), in the order the
    numbers are recorded."""
    row: dict[str, object] = {
        "period": counter.period,
        "variables": counter.variables,
        "status": "issued",
        "issued_at": issued[0].issued_at,
        "void_reason": None,
        "voided_at": None,
        "external": False,
    }
    events = []
    for item in issued:
        row["date"] = item.date
        row["document_ref"] = item.document_ref
        row["status"] = "issued" if item.reservation is None else "reserved"
        numbers = list(zip(item.values, item.numbers, strict=True))
        events += chain.events_of(str(row["status"]), row, numbers)
    return events


async def record_numbers(
    conn: Connection,
    series: Series,
    counter: CounterKey,
    issued: list[Issued],
    head: chain.Head | None = None,
) -> None:
    """One statement for the whole group or batch, whatever its size. Numbers that carry a
    reservation are recorded as reserved.

    With the counter's chain ``head`` (gapless issuing read it under the counter's lock), the same
    statement appends the numbers' events and moves the head; each request's values are then a
    run of the series' step, as a counter hands them out.

    The ledger's unique constraints are the last word on uniqueness: a number that reads like
    one already recorded (variables can combine that way, or a changed format) raises
    NumberCollision, a 409, and the caller's transaction, if any, records nothing.
    """
    if not any(item.values for item in issued):
        return
    try:
        if head is None:
            await conn.execute(
                INSERT_NUMBERS,
                series.id,
                counter.period,
                counter.variables,
                [v for item in issued for v in item.values],
                [n for item in issued for n in item.numbers],
                [item.date for item in issued for _ in item.values],
                issued[0].issued_at,
                [item.document_ref for item in issued for _ in item.values],
                [item.reservation is not None for item in issued for _ in item.values],
            )
        else:
            events = issued_events(counter, issued)
            hashes, new = chain.link(head, events)
            await conn.execute(
                INSERT_CHAINED_NUMBERS,
                series.id,
                counter.period,
                counter.variables,
                [_first_of_run(item, series.step) for item in issued],
                [len(item.values) for item in issued],
                [item.date for item in issued],
                issued[0].issued_at,
                [item.document_ref for item in issued],
                [item.reservation is not None for item in issued],
                series.step,
                [n for item in issued for n in item.numbers],
                chain.joined_contents(events),
                chain.CONTENT_SEPARATOR,
                head.counter_id,
                head.seq,
                new.seq,
                new.hash,
                b"".join(hashes),
            )
    except asyncpg.UniqueViolationError as error:
        if error.table_name != "numbers":  # the chain's own key: a bug, never the client's
            raise
        raise NumberCollision(
            f"A number rendered for series {series.name!r} is already in its ledger; "
            "nothing was issued. Send other variables, or change the format."
        ) from None


def encode_cursor(entry: LedgerEntry) -> str:
    variables = encode_variables(entry.variables, entry.variables)
    return cursors.encode("numbers", (entry.period, variables, entry.value))


def _valid_position(position: cursors.Position) -> bool:
    """A position encode_cursor can make: a period, a counter's variables, a bigint."""
    period, variables, value = position
    return (
        cursors.matches(PERIOD_PATTERN, period)
        and cursors.matches(COUNTER_VARIABLES_PATTERN, variables)
        and -MAX_BIGINT - 1 <= int(value) <= MAX_BIGINT
    )


def decode_cursor(cursor: str | None) -> tuple[str, str, int]:
    position = cursors.decode("numbers", cursor, (str, str, int), _valid_position)
    if position is None:
        return "", "", -(2**63)
    period, variables, value = position
    return str(period), str(variables), int(value)


async def page(
    conn: Executor,
    series: Series,
    *,
    period: str | None,
    variables: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
    document_ref: str | None = None,
) -> tuple[list[LedgerEntry], str | None]:
    after = decode_cursor(cursor)
    rows = await conn.fetch(
        SELECT_PAGE, series.id, period, variables, status, *after, limit + 1, document_ref
    )
    entries = [LedgerEntry(**dict(row)) for row in rows[:limit]]
    more = len(rows) > limit
    return entries, encode_cursor(entries[-1]) if more else None


CSV_COLUMNS = (
    "period",
    "variables",
    "value",
    "number",
    "date",
    "status",
    "issued_at",
    "void_reason",
    "voided_at",
    "document_ref",
    "external",
    "chain_seq",
    "chain_hash",
)


# Rows per page of a CSV export, each page read on a connection of its own (about 100 KB).
CSV_PAGE_ROWS = 1000
# A text cell starting with one of these is a formula (or may become one) in a spreadsheet that
# opens the CSV (OWASP, "CSV Injection"); the quote is there so that the rule can be undone.
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_cell(value: object) -> object:
    """A ledger value as a CSV cell that a spreadsheet shows as text and never evaluates.

    A text cell starting with a formula character (``=``, ``+``, ``-``, ``@``, tab, carriage
    return) gets a ``'`` in front, as OWASP recommends: a void reason ``=HYPERLINK(...)``, or a
    number such as ``-5+1`` that a ``{var:...}`` made, is shown as written. A text cell already
    starting with ``'`` gets one too, so the rule reads back without doubt: a text cell starting
    with ``'`` holds the value without that first ``'``. Integers and dates are written as they
    are (a spreadsheet reads ``-5`` as a number, never as a formula); timestamps in ISO 8601 with
    its ``T`` (``2026-03-31T14:05:09.123456+00:00``), not the space ``str`` puts there; hashes in
    lowercase hex.
    """
    if isinstance(value, str) and value.startswith(CSV_FORMULA_STARTS):
        return "'" + value
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


async def csv_chunks(
    pool: Executor,
    series: Series,
    *,
    period: str | None,
    variables: str | None,
    status: str | None,
    document_ref: str | None = None,
) -> AsyncIterator[str]:
    """The ledger as CSV, one chunk per keyset page (API and portal).

    The first page is read now, so that a database that cannot answer fails the request before
    anything is sent. Each later page is read when the client has taken the one before, on a
    connection taken from the pool for that one statement: no connection and no transaction is
    held while the client reads. Like the JSON pages, the export is not one snapshot: each row
    appears once, as it was when its page was read. Given a connection instead of the pool, every
    page is read on it (the auditor's ZIP reads them all in its snapshot).
    """

    async def rows_after(after: tuple[str, str, int]) -> list[asyncpg.Record]:
        return await pool.fetch(
            SELECT_PAGE, series.id, period, variables, status, *after, CSV_PAGE_ROWS, document_ref
        )

    def render(rows: list[asyncpg.Record], header: bool) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if header:
            writer.writerow(CSV_COLUMNS)
        writer.writerows([csv_cell(row[c]) for c in CSV_COLUMNS] for row in rows)
        return buffer.getvalue()

    first = await rows_after(decode_cursor(None))

    async def chunks() -> AsyncIterator[str]:
        rows = first
        yield render(rows, header=True)
        while len(rows) == CSV_PAGE_ROWS:
            last = rows[-1]
            rows = await rows_after((last["period"], last["variables"], last["value"]))
            yield render(rows, header=False)

    return chunks()


async def lookup(conn: Executor, series: Series, number: str) -> LedgerEntry:
    row = await conn.fetchrow(SELECT_NUMBER, series.id, number)
    if row is None:
        raise NumberNotFound(f"No number {number!r} in series {series.name!r}.")
    return LedgerEntry(**dict(row))


async def _locked_counter(conn: Connection, series: Series, number: str) -> CounterKey:
    """The counter of ``number``, its chain's head locked when the series keeps a chain: the
    lock order is the issuing one (counter, then ledger row)."""
    found = await conn.fetchrow(NUMBER_COUNTER, series.id, number)
    if found is None:
        raise NumberNotFound(f"No number {number!r} in series {series.name!r}.")
    counter = CounterKey(found["period"], found["variables"])
    if series.mode == "gapless":
        await chain.lock(conn, series.id, counter)
    return counter


async def record_change(
    conn: Connection,
    series: Series,
    counter: CounterKey,
    event: chain.Event,
    *,
    actor: str,
    action: str,
    details: dict[str, Any],
) -> None:
    """Record a change someone made to ``series``' ledger or ``counter``, in the transaction that
    made it: as ``event`` of the counter's chain when the series keeps one (gapless), and as
    ``action`` in the audit trail, whatever the mode."""
    if series.mode == "gapless":
        await chain.append(conn, series.id, counter, [event])
    await audit.record(
        conn,
        tenant_id=series.tenant_id,
        actor=actor,
        action=action,
        series=series.name,
        details=details,
    )


async def void(
    conn: Connection, series: Series, number: str, reason: str, *, actor: str
) -> LedgerEntry:
    if series.mode != "gapless":
        raise NotGapless("Only numbers of a gapless series can be voided.")
    async with conn.transaction():
        counter = await _locked_counter(conn, series, number)
        row = await conn.fetchrow(VOID_NUMBER, series.id, number, reason)
        if row is None:
            status = await conn.fetchval(NUMBER_STATUS, series.id, number)
            if status == "reserved":
                raise NumberReserved(
                    f"{number} is reserved: release its reservation instead of voiding it."
                )
            raise AlreadyVoided(f"{number} is already voided.")
        await record_change(
            conn,
            series,
            counter,
            chain.event("voided", row=row),
            actor=actor,
            action="number.voided",
            details={"number": number, "reason": reason},
        )
    return LedgerEntry(**dict(row))


async def annotate(
    conn: Connection, series: Series, number: str, document_ref: str, *, actor: str
) -> LedgerEntry:
    """Attach ``document_ref`` to a number of the ledger (whatever its status), audited with the
    reference it replaces and, in a gapless series, chained as an ``annotated`` event; setting
    the reference it has changes nothing and is not audited."""
    async with conn.transaction():
        counter = await _locked_counter(conn, series, number)
        row = await conn.fetchrow(ANNOTATE_NUMBER, series.id, number, document_ref)
        if row is None:  # a released reservation's row is gone
            raise NumberNotFound(f"No number {number!r} in series {series.name!r}.")
        entry = dict(row)
        previous = entry.pop("previous")
        if previous == document_ref:
            return LedgerEntry(**entry)
        await record_change(
            conn,
            series,
            counter,
            chain.event("annotated", row=entry),
            actor=actor,
            action="number.annotated",
            details={"number": number, "document_ref": document_ref, "previous": previous},
        )
    return LedgerEntry(**entry)


async def gaps(conn: Executor, series: Series, counter: CounterKey) -> GapReport:
    """Values between start and the counter's last value that the ledger does not hold.

    At most ``MAX_GAP_RUNS`` runs are listed; ``missing`` and ``runs`` count them all, and
    ``truncated`` says when the list is shorter than ``runs``.
    """
    top_sql = SEQUENCE_TOP if series.mode == "sequence" else COUNTER_TOP
    top: int | None = await conn.fetchval(top_sql, series.id, *counter)
    rows: list[Any] = []
    if top is not None:
        rows = await conn.fetch(
            SELECT_GAPS, series.id, *counter, series.start, series.step, top, MAX_GAP_RUNS
        )
    found = [
        Gap(first=r["first"], last=r["last"], count=(r["last"] - r["first"]) // series.step + 1)
        for r in rows
    ]
    runs = rows[0]["runs"] if rows else 0
    return GapReport(
        period=counter.period,
        variables=counter.variables,
        start=series.start,
        last_value=top,
        missing=int(rows[0]["missing"]) if rows else 0,
        runs=runs,
        truncated=runs > len(found),
        gaps=found,
    )
