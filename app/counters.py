"""The counter row of a (series, counter key): the SQL shared by gapless issuing and cached blocks.

One statement both creates the row on first use and advances it, so concurrent first requests for
a new counter cannot race; the row lock it takes is what serialises gapless issuers across
processes. The same statement holds the series row FOR KEY SHARE and compares the definition's
version, so it takes nothing for a request that read a definition an administrator has since
changed (see app.definition). The arithmetic runs in numeric so that a counter near the bigint
limit reports exhaustion instead of overflowing.
"""

from app.database import Connection
from app.definition import CounterKey, Series, StaleDefinition
from app.errors import SeriesExhausted

# Yields no row when the definition is stale ($8 is not the series' version) or when fewer than
# $5 values are left below $7; CURRENT_VERSION tells the two apart, on that rare path only.
ADVANCE_COUNTER = """
WITH definition AS (SELECT version FROM series WHERE id = $1 FOR KEY SHARE)
INSERT INTO counters AS c (series_id, period, variables, last_value)
SELECT $1, $2, $3, $4::bigint + ($5::bigint - 1) * $6::bigint
FROM definition
WHERE definition.version = $8 AND $4::numeric + ($5::numeric - 1) * $6 <= $7
ON CONFLICT (series_id, period, variables) DO UPDATE
    SET last_value = c.last_value + $5::bigint * $6::bigint
    WHERE c.last_value::numeric + $5::numeric * $6 <= $7
RETURNING last_value
"""
CURRENT_VERSION = "SELECT version FROM series WHERE id = $1"

# Gives back the unused tail of a reserved block, but only if nobody reserved after it.
RETURN_TAIL = """
UPDATE counters SET last_value = $5
WHERE series_id = $1 AND period = $2 AND variables = $3 AND last_value = $4
"""


async def advance(conn: Connection, series: Series, key: CounterKey, count: int) -> int | None:
    """Reserve ``count`` values; return the last of them, or None if the series is exhausted.

    The values reserved are ``last - (count - 1) * step`` up to ``last``, every ``step``. Raises
    StaleDefinition, having taken nothing, when the series changed since ``series`` was read.
    """
    last: int | None = await conn.fetchval(
        ADVANCE_COUNTER,
        series.id,
        key.period,
        key.variables,
        series.start,
        count,
        series.step,
        series.highest_value,
        series.version,
    )
    if last is None and await conn.fetchval(CURRENT_VERSION, series.id) != series.version:
        raise StaleDefinition(series.name)
    return last


async def give_back(
    conn: Connection, series: Series, key: CounterKey, first: int, last: int
) -> bool:
    """Return the unused run first..last if it is still the top of the counter."""
    status: str = await conn.execute(
        RETURN_TAIL, series.id, key.period, key.variables, last, first - series.step
    )
    return status == "UPDATE 1"


def exhausted(count: int) -> SeriesExhausted:
    """The answer when ``count`` values do not fit below max_value; nothing was taken."""
    if count == 1:
        return SeriesExhausted("The series has reached its max_value.")
    return SeriesExhausted(f"The series has fewer than {count} values left; none were issued.")


def run(last: int, count: int, step: int) -> list[int]:
    """The ``count`` values that end at ``last``."""
    first = last - (count - 1) * step
    return list(range(first, last + 1, step))
