"""Counters and numbers set by hand: go-live counters, numbers recorded from elsewhere, and the
preview of the next number.

Invariants, and why they hold:

- **A counter only moves up.** Setting a counter and recording a number above it run in one
  transaction that first takes the counter row's lock (creating the row if the period has none:
  each period may start from its own value), holding the series row ``FOR KEY SHARE`` and checking
  the definition's version, like every statement that takes values (``counters``). Gapless
  issuers and cached blocks take the same row lock, so the value read under it is the counter's
  top until commit; a request that read an older definition takes nothing. In sequence mode the
  counter is the PostgreSQL sequence: ``ALTER SEQUENCE`` (to the ceiling it already has) takes a
  lock that ``nextval`` waits for, so its last value cannot move between the read and ``setval``.
- **No unexplained gap.** In gapless mode every value a counter passes by hand is recorded in the
  ledger as voided, with the reason given (go-live) or one naming the number recorded (external),
  so the gap report stays empty. At most ``MAX_SKIPPED`` values are voided at once: a larger move
  is refused (422) and made in steps. Sequence and cached mode may skip values anyway and record
  nothing for them. In gapless mode each value passed, each number recorded and each counter set
  is an event of the counter's hash chain (``app.chain``: ``skipped``, ``external``,
  ``counter-set``), appended under the lock the change holds already.
- **A number recorded from elsewhere is never handed out.** It must read as a number of the series
  (its format on the document's date, or any earlier one: ``Template.parse``, checked by rendering
  it back), with a value the counter counts. Above the counter's top, the counter moves to it;
  below, the counter will never reach it, except in cached mode, where values below the top may
  still be held in a process's block: there it is refused (409). The ledger's unique constraints
  refuse a number, or a value of its counter, that is already recorded (409), except a value a
  counter passed by hand (voided and external): the number takes its place, so history can be
  recorded after going live, in any order.
- **Nothing goes into a closed period.** Setting a counter and the preview resolve their date as
  issuing does (``Issuer.resolve``, which calls ``Series.check_open``), and recording a number
  checks it too: a date on or before the series' ``closed_through`` is refused (409).
- **A preview takes nothing.** It reads the counter's top without a lock. In gapless and sequence
  mode it is the number the next request gets unless another request comes first; in cached mode
  it is the first value no process holds yet: a process that holds a block hands out lower ones
  first.
"""

import datetime
from collections.abc import Mapping
from typing import NamedTuple

import asyncpg

from app import chain
from app.database import Connection, Executor
from app.definition import CounterKey, Format, Series, StaleDefinition
from app.formatting import Template
from app.issuing import counters
from app.issuing.engine import Issuer
from app.issuing.issued import render_numbers
from app.issuing.sequences import create_sequence_sql, sequence_name
from app.ledger import ENTRY_COLUMNS, record_change
from app.problems import (
    CounterNotRaised,
    LedgerDisabled,
    NumberCollision,
    NumberExists,
    NumberHeld,
    NumberUnreadable,
    SeriesArchived,
    SeriesExhausted,
    field_error,
)
from app.schemas import CounterChange, ExternalNumber, LedgerEntry, NextPreview

# The most values a gapless counter passes by hand in one change (each is recorded as voided).
MAX_SKIPPED = 100_000

# The counter's row, created if missing with no value taken ($4 is start - step), and locked: the
# no-op update takes the row lock that issuers take. No row when the definition is stale ($5 is
# not the series' version) or the counter is new and the series has $6 counters (``counters``).
LOCK_COUNTER = f"""
WITH definition AS (SELECT version, counter_count FROM series WHERE id = $1 FOR KEY SHARE)
INSERT INTO counters AS c (series_id, period, variables, last_value)
SELECT $1, $2, $3, $4 FROM definition
WHERE definition.version = $5 AND {counters.ROOM_FOR_COUNTER.format(limit="$6::bigint")}
ON CONFLICT (series_id, period, variables) DO UPDATE SET last_value = c.last_value
RETURNING id, last_value
"""
MOVE_COUNTER = "UPDATE counters SET last_value = $2 WHERE id = $1"
SEQUENCE_LAST = "SELECT pg_sequence_last_value($1::regclass)"
SET_SEQUENCE = "SELECT setval($1::regclass, $2)"
# The values a counter passes by hand, recorded as voided with the reason. They are marked
# external (not issued here), which lets a number recorded from elsewhere take their place.
INSERT_SKIPPED = """
INSERT INTO numbers (series_id, period, variables, value, number, date, status, void_reason,
                     voided_at, external)
SELECT $1, $2, $3, value, number, $6, 'voided', $7, now(), true
FROM unnest($4::bigint[], $5::text[]) AS u (value, number)
RETURNING *
"""
# A number recorded from elsewhere in the place of a value a counter passed by hand.
FILL_SKIPPED = f"""
UPDATE numbers SET number = $5, date = $6, document_ref = $7, status = 'issued',
    void_reason = NULL, voided_at = NULL, issued_at = now()
WHERE series_id = $1 AND period = $2 AND variables = $3 AND value = $4
  AND status = 'voided' AND external
RETURNING {ENTRY_COLUMNS}
"""
INSERT_EXTERNAL = f"""
INSERT INTO numbers (series_id, period, variables, value, number, date, document_ref, external)
VALUES ($1, $2, $3, $4, $5, $6, $7, true)
RETURNING {ENTRY_COLUMNS}
"""
# The counter's top without a lock, $4 being the mode; NULL when nothing was taken yet.
PEEK_TOP = """
SELECT CASE WHEN $4 = 'sequence'
            THEN pg_sequence_last_value(('docnum_seq_' || id)::regclass)
            ELSE last_value END
FROM counters WHERE series_id = $1 AND period = $2 AND variables = $3
"""


class Locked(NamedTuple):
    """A counter whose row lock this transaction holds, and its top: the last value taken, or
    ``start - step`` when none was."""

    id: int
    key: CounterKey
    top: int

    def skipped(self, series: Series, below: int) -> range:
        """The values from the one after the top up to, not including, ``below``."""
        return range(self.top + series.step, below, series.step)


async def set_counter(
    conn: Connection,
    issuer: Issuer,
    series: Series,
    *,
    period: str,
    day: datetime.date | None,
    variables: Mapping[str, str],
    last_value: int,
    reason: str,
    actor: str,
    max_counters: int,
) -> CounterChange:
    """Move the counter of ``period`` (and ``variables``) up to ``last_value``: the next number
    it hands out is the one after. ``day`` (default: the period's first) dates the numbers a
    gapless counter records as voided."""
    day = day or first_day(series, period)
    template, key, day = issuer.resolve(series, day, variables)
    if key.period != period:
        raise field_error("date", f"{day} is in period {key.period!r}, not {period!r}")
    _check_counted(series, last_value, "last_value")
    async with conn.transaction():
        locked = await _lock(conn, series, key, max_counters)
        if last_value <= locked.top:
            raise CounterNotRaised(
                f"The counter of period {period!r} is at {locked.top}; a counter only moves up, "
                f"so {last_value} is refused. Numbers already handed out stay as they are."
            )
        skipped = locked.skipped(series, last_value + series.step)
        voided = await _move(
            conn, series, locked, template, day, variables, skipped, reason, "last_value"
        )
        await _set_top(conn, series, locked, last_value)
        previous = None if locked.top < series.start else locked.top
        await record_change(
            conn,
            series,
            key,
            chain.event("counter-set", last_value=last_value, reason=reason),
            actor=actor,
            action="counter.set",
            details={
                "period": period,
                "variables": key.variables,
                "from": previous,
                "to": last_value,
                "reason": reason,
                "voided": voided,
            },
        )
    return CounterChange(
        period=period,
        variables=key.variables,
        previous=previous,
        last_value=last_value,
        voided=voided,
    )


async def record_external(
    conn: Connection,
    issuer: Issuer,
    series: Series,
    body: ExternalNumber,
    *,
    actor: str,
    max_counters: int,
) -> LedgerEntry:
    """Record ``body.number``, issued elsewhere for a document dated ``body.date``, in the
    ledger."""
    number, day, document_ref = body.number, body.date, body.document_ref
    if not series.ledger:
        raise LedgerDisabled(
            f"Series {series.name!r} keeps no ledger to record {number!r} in; turn it on first."
        )
    if series.archived_at is not None:
        raise SeriesArchived(f"Series {series.name!r} is archived; restore it first.")
    entry, value, variables = read_number(series, number, day)
    issuer.check_date(day, entry)
    series.check_open(day)
    template = entry.template
    key = series.counter(day, template, variables)
    async with conn.transaction():
        locked = await _lock(conn, series, key, max_counters)
        voided = 0
        if value > locked.top:
            reason = f"skipped: {number} was recorded from elsewhere"
            skipped = locked.skipped(series, value)
            voided = await _move(
                conn, series, locked, template, day, variables, skipped, reason, "number"
            )
        elif series.mode == "cached":
            raise NumberHeld(
                f"The counter of {number!r} is already at {locked.top}: in cached mode a "
                "process may still hold its value and hand it out, so it cannot be recorded "
                "from elsewhere."
            )
        try:
            row = await conn.fetchrow(
                FILL_SKIPPED, series.id, *key, value, number, day, document_ref
            ) or await conn.fetchrow(
                INSERT_EXTERNAL, series.id, *key, value, number, day, document_ref
            )
        except asyncpg.UniqueViolationError:
            raise NumberExists(
                f"Series {series.name!r} already has {number!r}, or value {value} of its "
                "counter, in its ledger; nothing was recorded."
            ) from None
        assert row is not None  # INSERT … RETURNING
        if value > locked.top:  # after the insert: setval stays even if the transaction fails
            await _set_top(conn, series, locked, value)
        await record_change(
            conn,
            series,
            key,
            chain.event("external", row=row),
            actor=actor,
            action="number.recorded",
            details={"number": number, "date": day, "document_ref": document_ref, "voided": voided},
        )
    return LedgerEntry(**dict(row))


async def preview(
    conn: Executor,
    issuer: Issuer,
    series: Series,
    *,
    day: datetime.date | None,
    variables: Mapping[str, str],
) -> NextPreview:
    """The number the next request for ``day`` and ``variables`` would get; nothing is taken."""
    template, key, day = issuer.resolve(series, day, variables)
    top: int | None = await conn.fetchval(PEEK_TOP, series.id, *key, series.mode)
    value = series.start if top is None else max(top + series.step, series.start)
    if value > series.highest_value:
        raise SeriesExhausted("The series has reached its max_value.")
    return NextPreview(
        series=series.name,
        number=render_numbers(series, template, [value], day, variables)[0],
        value=value,
        period=key.period,
        variables=key.variables,
        date=day,
        mode=series.mode,
    )


def read_number(
    series: Series, number: str, day: datetime.date
) -> tuple[Format, int, dict[str, str]]:
    """The format ``number`` was rendered with for a document dated ``day``, its value and its
    variables: the format in force on ``day`` first, then every other, newest first."""
    entries = [series.format_for(day), *reversed(series.formats)]
    for entry in dict.fromkeys(entries):
        parsed = entry.template.parse(number, series=series.name)
        if parsed is None:
            continue
        rendered = render_numbers(series, entry.template, [parsed.value], day, parsed.variables)
        if rendered == [number]:
            _check_counted(series, parsed.value, "number")
            return entry, parsed.value, parsed.variables
    raise NumberUnreadable(
        f"{number!r} is not a number series {series.name!r} renders for a document dated {day} "
        f"(formats: {', '.join(repr(f.format) for f in series.formats)}).",
        errors=[{"field": "number", "message": "does not read as a number of the series"}],
    )


def first_day(series: Series, period: str) -> datetime.date:
    """The first date of a period key (``app.periods.period_key``); today for ``all``."""
    try:
        if period == "all":
            return series.today(datetime.datetime.now(datetime.UTC))
        if len(period) == 4:
            return datetime.date(int(period), series.fiscal_year_start, 1)
        if len(period) == 7:
            return datetime.date(int(period[:4]), int(period[5:]), 1)
        return datetime.date.fromisoformat(period)
    except ValueError:
        raise field_error("period", f"{period!r} names no period") from None


def _check_counted(series: Series, value: int, field: str) -> None:
    """``value`` must be one the counter counts: from start, every step, up to max_value."""
    if value < series.start or (value - series.start) % series.step:
        raise field_error(
            field,
            f"value {value} is not one the series counts (from {series.start}, "
            f"every {series.step})",
        )
    if value > series.highest_value:
        raise field_error(field, f"value {value} is past the series' max_value")


async def _lock(conn: Connection, series: Series, key: CounterKey, max_counters: int) -> Locked:
    """Lock the counter, creating it if missing (in sequence mode, its sequence too)."""
    row = await conn.fetchrow(
        LOCK_COUNTER,
        series.id,
        *key,
        series.start - series.step,
        series.version,
        max_counters,
    )
    if row is None:
        await counters.check_refusal(conn, series, key, max_counters)
        raise StaleDefinition(series.name)
    if series.mode != "sequence":
        return Locked(row["id"], key, row["last_value"])
    name = sequence_name(row["id"])
    await conn.execute(create_sequence_sql(row["id"], series))
    # A change to the ceiling it has: the lock it takes holds every nextval until commit.
    await conn.execute(f"ALTER SEQUENCE {name} MAXVALUE {int(series.highest_value)}")
    top: int | None = await conn.fetchval(SEQUENCE_LAST, name)
    return Locked(row["id"], key, series.start - series.step if top is None else top)


async def _move(
    conn: Connection,
    series: Series,
    locked: Locked,
    template: Template,
    day: datetime.date,
    variables: Mapping[str, str],
    skipped: range,
    reason: str,
    field: str,
) -> int:
    """In gapless mode, record the values a counter passes as voided with ``reason``; returns
    how many were (the other modes record none)."""
    if series.mode != "gapless" or not skipped:
        return 0
    if len(skipped) > MAX_SKIPPED:
        raise field_error(
            field,
            f"the counter would pass {len(skipped)} values, each recorded as voided; it "
            f"passes at most {MAX_SKIPPED} at once: move it in steps",
        )
    values = list(skipped)
    numbers = render_numbers(series, template, values, day, variables)
    try:
        rows = await conn.fetch(
            INSERT_SKIPPED, series.id, *locked.key, values, numbers, day, reason
        )
    except asyncpg.UniqueViolationError:
        raise NumberCollision(
            f"A number between {numbers[0]} and {numbers[-1]} is already in the ledger of "
            f"series {series.name!r}; nothing was changed."
        ) from None
    await chain.append(conn, series.id, locked.key, [chain.event("skipped", row=r) for r in rows])
    return len(skipped)


async def _set_top(conn: Connection, series: Series, locked: Locked, last: int) -> None:
    """The counter's new top: the next value it hands out is the one after ``last``."""
    if series.mode == "sequence":
        await conn.execute(SET_SEQUENCE, sequence_name(locked.id), last)
    else:
        await conn.execute(MOVE_COUNTER, locked.id, last)
