"""Sequence issuing: one PostgreSQL sequence per (series, period), advanced with ``nextval``.

Unique and fast, but a value taken by a request that then fails is gone: sequences never roll
back. The sequence is created on first use, inside a transaction that holds the counter row's
lock, so racing first requests create it once. Its name comes from the counter row's id, never
from anything a client sent.
"""

import asyncpg

from app.database import Connection
from app.errors import SeriesExhausted
from app.series import Series

ENSURE_COUNTER = """
INSERT INTO counters AS c (series_id, period, last_value) VALUES ($1, $2, 0)
ON CONFLICT (series_id, period) DO UPDATE SET last_value = c.last_value
RETURNING id
"""
FIND_COUNTER = "SELECT id FROM counters WHERE series_id = $1 AND period = $2"
NEXT_VALUES = "SELECT nextval($1::regclass) FROM generate_series(1, $2)"


def sequence_name(counter_id: int) -> str:
    return f"docnum_seq_{counter_id}"


def create_sequence_sql(counter_id: int, series: Series) -> str:
    """DDL takes no parameters; every part of this statement is an integer we computed."""
    return (
        f"CREATE SEQUENCE IF NOT EXISTS {sequence_name(counter_id)} AS bigint "
        f"START WITH {int(series.start)} INCREMENT BY {int(series.step)} "
        f"MINVALUE {int(series.start)} MAXVALUE {int(series.highest_value)} NO CYCLE"
    )


class SequenceIssuer:
    def __init__(self) -> None:
        self._names: dict[tuple[int, str], str] = {}

    async def take(self, conn: Connection, series: Series, period: str, count: int) -> list[int]:
        """``count`` unique values; in a batch they may interleave with other callers'."""
        name = self._names.get((series.id, period)) or await self._ensure(conn, series, period)
        try:
            values = [row[0] for row in await conn.fetch(NEXT_VALUES, name, count)]
        except asyncpg.SequenceGeneratorLimitExceededError:
            raise SeriesExhausted("The series has reached its max_value.") from None
        return sorted(values)

    async def _ensure(self, conn: Connection, series: Series, period: str) -> str:
        counter_id = await conn.fetchval(FIND_COUNTER, series.id, period)
        if counter_id is None:
            async with conn.transaction():
                counter_id = await conn.fetchval(ENSURE_COUNTER, series.id, period)
                await conn.execute(create_sequence_sql(counter_id, series))
        name = self._names[(series.id, period)] = sequence_name(counter_id)
        return name
