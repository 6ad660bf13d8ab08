"""The ledger of issued numbers: recording, reading, voiding and finding gaps.

Gapless series record every number in the transaction that issues it. A voided number stays in
the ledger with its reason, so an auditor sees every value accounted for.
"""

import base64
import binascii
import csv
import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from app import audit
from app.database import Connection, Executor, acquire_unbounded
from app.errors import (
    AlreadyVoided,
    InvalidRequest,
    NotGapless,
    NumberCollision,
    NumberNotFound,
)
from app.issued import Issued
from app.schemas import MAX_BIGINT, PERIOD_PATTERN, Gap, GapReport, LedgerEntry
from app.series import Series

INSERT_NUMBERS = """
INSERT INTO numbers (series_id, period, value, number, date, issued_at)
SELECT $1, $2, value, number, date, $6
FROM unnest($3::bigint[], $4::text[], $5::date[]) AS u (value, number, date)
"""
# Keyset paging on the primary key: stable under concurrent inserts, no OFFSET scans.
SELECT_PAGE = """
SELECT value, number, period, date, status, issued_at, void_reason, voided_at
FROM numbers
WHERE series_id = $1
  AND ($2::text IS NULL OR period = $2)
  AND ($3::text IS NULL OR status = $3)
  AND (period, value) > ($4, $5)
ORDER BY period, value
LIMIT $6
"""
VOID_NUMBER = """
UPDATE numbers SET status = 'voided', void_reason = $3, voided_at = now()
WHERE series_id = $1 AND number = $2 AND status = 'issued'
RETURNING value, number, period, date, status, issued_at, void_reason, voided_at
"""
NUMBER_EXISTS = "SELECT EXISTS (SELECT 1 FROM numbers WHERE series_id = $1 AND number = $2)"
# Runs of missing values between consecutive recorded ones, plus before the first recorded.
SELECT_GAPS = """
WITH recorded AS (
    SELECT value, lag(value) OVER (ORDER BY value) AS previous
    FROM numbers WHERE series_id = $1 AND period = $2
)
SELECT coalesce(previous + $4, $3) AS first, value - $4 AS last
FROM recorded
WHERE value > coalesce(previous + $4, $3)
UNION ALL
SELECT coalesce(max(value) + $4, $3), $5 FROM numbers WHERE series_id = $1 AND period = $2
HAVING coalesce(max(value) + $4, $3) <= $5
ORDER BY first
LIMIT $6
"""
COUNTER_TOP = "SELECT last_value FROM counters WHERE series_id = $1 AND period = $2"
SEQUENCE_TOP = """
SELECT pg_sequence_last_value(('docnum_seq_' || id)::regclass)
FROM counters WHERE series_id = $1 AND period = $2
"""

MAX_GAP_RUNS = 10_000


async def record_numbers(
    conn: Connection, series: Series, period: str, issued: list[Issued]
) -> None:
    """One statement for the whole group or batch, whatever its size.

    The ledger's unique constraints are the last word on uniqueness: a number that reads like
    one already recorded (variables can combine that way, or a changed format) raises
    NumberCollision, a 409, and the caller's transaction, if any, records nothing.
    """
    values = [v for item in issued for v in item.values]
    if not values:
        return
    try:
        await conn.execute(
            INSERT_NUMBERS,
            series.id,
            period,
            values,
            [n for item in issued for n in item.numbers],
            [item.date for item in issued for _ in item.values],
            issued[0].issued_at,
        )
    except asyncpg.UniqueViolationError:
        raise NumberCollision(
            f"A number rendered for series {series.name!r} is already in its ledger; "
            "nothing was issued. Send other variables, or change the format."
        ) from None


def encode_cursor(period: str, value: int) -> str:
    raw = json.dumps([period, value]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[str, int]:
    if not cursor:
        return "", -(2**63)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        period, value = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidRequest("cursor: not a cursor this service returned") from None
    # A cursor is client input like any other: it must decode to what encode_cursor can make.
    if (
        not isinstance(period, str)
        or re.fullmatch(PERIOD_PATTERN, period) is None
        or type(value) is not int
        or not -MAX_BIGINT - 1 <= value <= MAX_BIGINT
    ):
        raise InvalidRequest("cursor: not a cursor this service returned")
    return period, value


async def page(
    conn: Executor,
    series: Series,
    *,
    period: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[LedgerEntry], str | None]:
    after_period, after_value = decode_cursor(cursor)
    rows = await conn.fetch(
        SELECT_PAGE, series.id, period, status, after_period, after_value, limit + 1
    )
    entries = [LedgerEntry(**dict(row)) for row in rows[:limit]]
    more = len(rows) > limit
    return entries, encode_cursor(entries[-1].period, entries[-1].value) if more else None


async def stream(
    conn: Connection, series: Series, *, period: str | None, status: str | None
) -> AsyncIterator[asyncpg.Record]:
    """Every matching row, read through a server-side cursor so memory stays flat."""
    async with conn.transaction():
        async for row in conn.cursor(
            SELECT_PAGE, series.id, period, status, "", -(2**63), None, prefetch=1000
        ):
            yield row


CSV_COLUMNS = (
    "period",
    "value",
    "number",
    "date",
    "status",
    "issued_at",
    "void_reason",
    "voided_at",
)


async def csv_chunks(
    pool: asyncpg.Pool, series: Series, *, period: str | None, status: str | None
) -> AsyncIterator[str]:
    """The ledger as CSV, in chunks as rows arrive from a server-side cursor (API and portal)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async with acquire_unbounded(pool) as conn:  # as long as the reader takes
        async for row in stream(conn, series, period=period, status=status):
            writer.writerow([row[c] for c in CSV_COLUMNS])
            if buffer.tell() > 65_536:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


async def void(
    conn: Connection, series: Series, number: str, reason: str, *, actor: str
) -> LedgerEntry:
    if series.mode != "gapless":
        raise NotGapless("Only numbers of a gapless series can be voided.")
    async with conn.transaction():
        row = await conn.fetchrow(VOID_NUMBER, series.id, number, reason)
        if row is None:
            if await conn.fetchval(NUMBER_EXISTS, series.id, number):
                raise AlreadyVoided(f"{number} is already voided.")
            raise NumberNotFound(f"No number {number!r} in series {series.name!r}.")
        await audit.record(
            conn,
            tenant_id=series.tenant_id,
            actor=actor,
            action="number.voided",
            series=series.name,
            details={"number": number, "reason": reason},
        )
    return LedgerEntry(**dict(row))


async def gaps(conn: Executor, series: Series, period: str) -> GapReport:
    """Values between start and the period's last value that the ledger does not hold."""
    top_sql = SEQUENCE_TOP if series.mode == "sequence" else COUNTER_TOP
    top: int | None = await conn.fetchval(top_sql, series.id, period)
    runs: list[Any] = []
    if top is not None:
        runs = await conn.fetch(
            SELECT_GAPS, series.id, period, series.start, series.step, top, MAX_GAP_RUNS
        )
    found = [
        Gap(first=r["first"], last=r["last"], count=(r["last"] - r["first"]) // series.step + 1)
        for r in runs
    ]
    return GapReport(
        period=period,
        start=series.start,
        last_value=top,
        missing=sum(g.count for g in found),
        gaps=found,
    )
