"""Sequence issuing: one PostgreSQL sequence per (series, counter key), advanced with ``nextval``.

Unique and fast, but a value taken by a request that then fails is gone: sequences never roll
back. The sequence is created on first use, inside a transaction that holds the counter row's
lock, so racing first requests create it once. Its name comes from the counter row's id, never
from anything a client sent. Creating the counter row holds the series row FOR KEY SHARE and checks
the definition's version, like every statement that takes values (``counters``): a request that
read a definition changed since (say, from sequence to gapless mode before the first number)
creates nothing and starts again. Once the counter row exists, the series' structural fields can
no longer change, so ``nextval`` itself needs no such check. Creating it also checks the series'
limit on counters (see ``counters``), which bounds the sequences a series can make.

A process remembers the sequence names of at most ``in_memory`` counters (setting
``cached_counters``); a name it dropped is looked up again, with one query, when next needed.

A request for more values than are left below max_value is refused before any is taken, in the
same statement, so a batch that does not fit leaves the rest to smaller requests. Only two
batches racing for the very last values can still use some up and fail.
"""

import functools

import asyncpg

from app.database import Connection, round_trip_limit
from app.definition import CounterKey, Series, StaleDefinition
from app.issuing import counters
from app.issuing.coalesce import Coalescer
from app.issuing.issued import Request
from app.issuing.single import SingleIssuer
from app.lru import LRU

# No row when the definition is stale ($4 is not the series' version) or when the counter is new
# and the series has $5 counters already (see ``counters``).
ENSURE_COUNTER = f"""
WITH definition AS (SELECT version, counter_count FROM series WHERE id = $1 FOR KEY SHARE)
INSERT INTO counters AS c (series_id, period, variables, last_value)
SELECT $1, $2, $3, 0 FROM definition
WHERE definition.version = $4 AND {counters.ROOM_FOR_COUNTER.format(limit="$5::bigint")}
ON CONFLICT (series_id, period, variables) DO UPDATE SET last_value = c.last_value
RETURNING id
"""
# The counter's id, or NULL when there is none yet; no row at all when the definition is stale.
FIND_COUNTER = """
SELECT (SELECT id FROM counters WHERE series_id = $1 AND period = $2 AND variables = $3)
FROM series WHERE id = $1 AND version = $4
"""
# The room check reads the sequence's own ceiling and runs once, before the first nextval.
NEXT_VALUES = """
WITH room AS MATERIALIZED (
    SELECT coalesce(pg_sequence_last_value(s.seqrelid), s.seqstart - s.seqincrement)::numeric
           + $2::numeric * s.seqincrement <= s.seqmax AS fits
    FROM pg_sequence AS s WHERE s.seqrelid = $1::regclass
)
SELECT nextval($1::regclass) FROM room CROSS JOIN generate_series(1, $2) WHERE room.fits
"""
SERIES_COUNTERS = "SELECT id FROM counters WHERE series_id = $1"


def sequence_name(counter_id: int) -> str:
    return f"docnum_seq_{counter_id}"


def create_sequence_sql(counter_id: int, series: Series) -> str:
    """DDL takes no parameters; every part of this statement is an integer we computed."""
    return (
        f"CREATE SEQUENCE IF NOT EXISTS {sequence_name(counter_id)} AS bigint "
        f"START WITH {int(series.start)} INCREMENT BY {int(series.step)} "
        f"MINVALUE {int(series.start)} MAXVALUE {int(series.highest_value)} NO CYCLE"
    )


async def set_ceiling(conn: Connection, series: Series) -> None:
    """After max_value changed: every sequence of the series stops at its new highest value."""
    for counter_id in [row["id"] for row in await conn.fetch(SERIES_COUNTERS, series.id)]:
        await conn.execute(
            f"ALTER SEQUENCE {sequence_name(counter_id)} MAXVALUE {int(series.highest_value)}"
        )


class SequenceIssuer(SingleIssuer):
    def __init__(
        self,
        pool: asyncpg.Pool,
        idempotency_ttl_seconds: int,
        limits: counters.CounterLimits = counters.DEFAULT_LIMITS,
    ) -> None:
        super().__init__(pool, idempotency_ttl_seconds)
        self._names: LRU[tuple[int, CounterKey], str] = LRU(limits.in_memory)
        self._max_counters = limits.per_series
        self._groups = Coalescer(round_trip_limit(pool))

    async def _values(self, request: Request, conn: "Connection | None") -> list[int]:
        series, counter = request.series, request.counter
        if conn is not None:
            return await self.take(conn, series, counter, request.count)
        fetch = functools.partial(self._fetch, series, counter)
        group = (series.id, series.version, counter)
        return await self._groups.take(group, request.count, fetch)

    async def _fetch(self, series: Series, counter: CounterKey, count: int) -> list[int]:
        """One round trip for a coalesced group, on a connection of its own."""
        async with self._pool.acquire() as conn:
            return await self.take(conn, series, counter, count)

    async def take(
        self, conn: Connection, series: Series, key: CounterKey, count: int
    ) -> list[int]:
        """``count`` unique values; in a batch they may interleave with other callers'."""
        name = self._names.get((series.id, key)) or await self._ensure(conn, series, key)
        try:
            values = [row[0] for row in await conn.fetch(NEXT_VALUES, name, count)]
        except asyncpg.SequenceGeneratorLimitExceededError:
            raise counters.exhausted(count) from None
        if not values:
            raise counters.exhausted(count)
        return sorted(values)

    async def _ensure(self, conn: Connection, series: Series, key: CounterKey) -> str:
        found = await conn.fetchrow(
            FIND_COUNTER, series.id, key.period, key.variables, series.version
        )
        if found is None:
            raise StaleDefinition(series.name)
        counter_id = found[0]
        if counter_id is None:
            async with conn.transaction():
                counter_id = await conn.fetchval(
                    ENSURE_COUNTER,
                    series.id,
                    key.period,
                    key.variables,
                    series.version,
                    self._max_counters,
                )
                if counter_id is None:
                    await counters.check_refusal(conn, series, key, self._max_counters)
                    raise StaleDefinition(series.name)
                await conn.execute(create_sequence_sql(counter_id, series))
            # The caller's transaction may not have committed it yet, or may roll it back: other
            # requests learn the name once they find the row committed.
            return sequence_name(counter_id)
        name = self._names[(series.id, key)] = sequence_name(counter_id)
        return name
