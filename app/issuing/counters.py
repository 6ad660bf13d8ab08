"""The counter row of a (series, counter key): the SQL shared by gapless issuing and cached blocks.

One statement both creates the row on first use and advances it, so concurrent first requests for
a new counter cannot race; the row lock it takes is what serialises gapless issuers across
processes. The same statement holds the series row FOR KEY SHARE and compares the definition's
version, so it takes nothing for a request that read a definition an administrator has since
changed (see app.definition). The arithmetic runs in numeric so that a counter near the bigint
limit reports exhaustion instead of overflowing.

A series has at most ``max_counters`` counters (the setting ``max_counters_per_series``): the
statements that create a counter (this one, and sequence mode's in ``sequences``) create none
past it. They read the series' ``counter_count``, which a trigger on ``counters`` keeps (migration
0003), from the row they lock anyway, so the check costs nothing while the series has room; only a
full series looks the counter up, to serve the counters it has. The count is read as of the
statement's start, so requests creating different new counters of one series at the same instant
can each see room for one more: the series can end up that many requests, minus one, past the
limit.

The same statement returns the counter's chain head (see ``app.chain``), read under the lock it
takes, so gapless issuing appends its events without another round trip.

The counter row of a gapless series also keeps the latest document date it issued a number for,
set by the same statement that advances it. A series with ``date_order: strict`` passes the
earliest date of the values it takes, and the statement takes nothing when the counter's last
date is later: the check and the advance are one statement under the row's lock, so two
processes cannot both pass it with dates out of order, and it costs no round trip.
"""

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from app.chain import Head, head_of
from app.database import Connection
from app.definition import CounterKey, Series, StaleDefinition
from app.problems import DateOrder, SeriesExhausted, TooManyCounters


@dataclass(frozen=True, slots=True)
class CounterLimits:
    """How many counters a series may have, how many a process keeps state for in memory, and
    how long a busy cached-mode block lasts at least (settings ``max_counters_per_series``,
    ``cached_counters`` and ``cached_block_seconds``)."""

    per_series: int = 50_000
    in_memory: int = 10_000
    block_seconds: float = 0.0


DEFAULT_LIMITS = CounterLimits()


# True when the series has fewer than {limit} counters (the common case: one column of the row
# the statement reads anyway), or else when the counter (period $2, variables $3) exists already.
# Reads the series' row as ``definition``.
ROOM_FOR_COUNTER = """
CASE WHEN definition.counter_count < {limit} THEN true
     ELSE EXISTS (SELECT FROM counters WHERE series_id = $1 AND period = $2 AND variables = $3)
END"""

# Yields no row when the definition is stale ($8 is not the series' version), when fewer than
# $5 values are left below $7, when the counter is new and the series has $9 counters already, or
# when the counter's last date is after $10 (the earliest date of the values taken, NULL when the
# series does not keep dates in order); REFUSAL tells these apart, on that rare path only. $11 is
# the latest date of the values taken (NULL when not known, for cached blocks): the counter keeps
# the latest one, so the check and the advance are one statement under the counter row's lock.
ADVANCE_COUNTER = f"""
WITH definition AS (SELECT version, counter_count FROM series WHERE id = $1 FOR KEY SHARE)
INSERT INTO counters AS c (series_id, period, variables, last_value, last_date)
SELECT $1, $2, $3, $4::bigint + ($5::bigint - 1) * $6::bigint, $11::date
FROM definition
WHERE definition.version = $8 AND $4::numeric + ($5::numeric - 1) * $6 <= $7
    AND {ROOM_FOR_COUNTER.format(limit="$9::bigint")}
ON CONFLICT (series_id, period, variables) DO UPDATE
    SET last_value = c.last_value + $5::bigint * $6::bigint,
        last_date = greatest(c.last_date, $11::date)
    WHERE c.last_value::numeric + $5::numeric * $6 <= $7
        AND coalesce(c.last_date <= $10::date, true)
RETURNING last_value, id, chain_seq, chain_head
"""
# Why a statement that creates a counter took nothing: the series' version now, whether the
# counter is missing while the series has $4 counters or more, and the counter's last date.
REFUSAL = f"""
SELECT version, NOT ({ROOM_FOR_COUNTER.format(limit="$4::bigint")}) AS full,
    (SELECT last_date FROM counters WHERE series_id = $1 AND period = $2 AND variables = $3)
        AS last_date
FROM series AS definition WHERE id = $1
"""

# Gives back the unused tail of a reserved block, but only if nobody reserved after it: the
# counter goes from $4 (the tail's last value) back to $5 (the value before its first).
RETURN_TAIL = """
UPDATE counters SET last_value = $5
WHERE series_id = $1 AND period = $2 AND variables = $3 AND last_value = $4
"""


class Advanced(NamedTuple):
    """The last value reserved, and the counter's chain head, locked with the row."""

    last: int
    head: Head


@dataclass(frozen=True, slots=True)
class Dates:
    """The document dates of the values one statement takes: the earliest is checked against the
    counter's last date (when the series keeps dates in order), the latest becomes it."""

    earliest: datetime.date | None
    latest: datetime.date


async def advance(
    conn: Connection,
    series: Series,
    key: CounterKey,
    count: int,
    max_counters: int,
    dates: Dates | None = None,
) -> Advanced | None:
    """Reserve ``count`` values; return the last of them, or None if the series is exhausted.

    The values reserved are ``last - (count - 1) * step`` up to ``last``, every ``step``. Raises
    StaleDefinition, having taken nothing, when the series changed since ``series`` was read,
    TooManyCounters when the counter is new and the series has ``max_counters`` already, and
    DateOrder when ``dates.earliest`` is before the counter's last date.
    """
    row = await conn.fetchrow(
        ADVANCE_COUNTER,
        series.id,
        key.period,
        key.variables,
        series.start,
        count,
        series.step,
        series.highest_value,
        series.version,
        max_counters,
        None if dates is None else dates.earliest,
        None if dates is None else dates.latest,
    )
    if row is None:
        await check_refusal(conn, series, key, max_counters, dates)
        return None
    return Advanced(row["last_value"], head_of(row))


async def check_refusal(
    conn: Connection,
    series: Series,
    key: CounterKey,
    max_counters: int,
    dates: Dates | None = None,
) -> None:
    """After a statement that creates counters took nothing: raise StaleDefinition,
    TooManyCounters or DateOrder if one is why; return if none is."""
    found = await conn.fetchrow(REFUSAL, series.id, key.period, key.variables, max_counters)
    if found is None or found["version"] != series.version:
        raise StaleDefinition(series.name)
    if found["full"]:
        raise TooManyCounters(
            f"Series {series.name!r} has {max_counters} counters, as many as a series may have "
            f"(one per period and variable values): the number for period {key.period!r}"
            + (f" and {key.variables!r}" if key.variables else "")
            + " would need a new one. Numbers of its existing counters are still issued."
        )
    last_date: datetime.date | None = found["last_date"]
    earliest = None if dates is None else dates.earliest
    if earliest is not None and last_date is not None and earliest < last_date:
        raise date_order(series, key, earliest, last_date)


def date_order(
    series: Series, key: CounterKey, day: datetime.date, last_date: datetime.date
) -> DateOrder:
    """The answer to a request dated ``day`` when its counter issued a number dated
    ``last_date`` already."""
    counter = key.period + (f", {key.variables}" if key.variables else "")
    return DateOrder(
        f"Series {series.name!r} keeps document dates in order: counter {counter} has a number "
        f"dated {last_date}, so a document dated {day} cannot take the next one. Nothing was "
        f"issued; send a date on or after {last_date}.",
        last_date=last_date,
    )


class Tail(NamedTuple):
    """Unused values ``first`` to ``last`` (every ``step``) of a counter, reserved last."""

    series_id: int
    key: CounterKey
    first: int
    last: int
    step: int


async def give_back(conn: Connection, tails: Iterable[Tail]) -> None:
    """Return each tail that is still the top of its counter; the others stay skipped.

    One transaction, with the counters in the same order in every process, so that two processes
    giving back tails of the same counters cannot deadlock.
    """
    rows = sorted(
        (t.series_id, t.key.period, t.key.variables, t.last, t.first - t.step) for t in tails
    )
    if rows:
        await conn.executemany(RETURN_TAIL, rows)


def exhausted(count: int) -> SeriesExhausted:
    """The answer when ``count`` values do not fit below max_value; nothing was taken."""
    if count == 1:
        return SeriesExhausted("The series has reached its max_value.")
    return SeriesExhausted(f"The series has fewer than {count} values left; none were issued.")


def run(last: int, count: int, step: int) -> list[int]:
    """The ``count`` values that end at ``last``."""
    first = last - (count - 1) * step
    return list(range(first, last + 1, step))
