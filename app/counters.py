"""The counter row of a (series, period): the SQL shared by gapless issuing and cached blocks.

One statement both creates the row on first use and advances it, so concurrent first requests for
a new period cannot race; the row lock it takes is what serialises gapless issuers across
processes. The arithmetic runs in numeric so that a counter near the bigint limit reports
exhaustion instead of overflowing.
"""

from typing import TYPE_CHECKING

from app.database import Connection
from app.errors import SeriesExhausted

if TYPE_CHECKING:  # app.series imports app.sequences, which imports this module
    from app.series import Series

ADVANCE_COUNTER = """
INSERT INTO counters AS c (series_id, period, last_value)
SELECT $1, $2, $3::bigint + ($4::bigint - 1) * $5::bigint
WHERE $3::numeric + ($4::numeric - 1) * $5 <= $6
ON CONFLICT (series_id, period) DO UPDATE
    SET last_value = c.last_value + $4::bigint * $5::bigint
    WHERE c.last_value::numeric + $4::numeric * $5 <= $6
RETURNING last_value
"""

# Gives back the unused tail of a reserved block, but only if nobody reserved after it.
RETURN_TAIL = """
UPDATE counters SET last_value = $4
WHERE series_id = $1 AND period = $2 AND last_value = $3
"""


async def advance(conn: Connection, series: "Series", period: str, count: int) -> int | None:
    """Reserve ``count`` values; return the last of them, or None if the series is exhausted.

    The values reserved are ``last - (count - 1) * step`` up to ``last``, every ``step``.
    """
    last: int | None = await conn.fetchval(
        ADVANCE_COUNTER,
        series.id,
        period,
        series.start,
        count,
        series.step,
        series.highest_value,
    )
    return last


async def give_back(conn: Connection, series: "Series", period: str, first: int, last: int) -> bool:
    """Return the unused run first..last if it is still the top of the counter."""
    status: str = await conn.execute(RETURN_TAIL, series.id, period, last, first - series.step)
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
