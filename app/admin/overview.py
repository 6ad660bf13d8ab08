"""What the series list shows beside each series: where its current period stands, and how many
numbers it issued today.

Where the current period stands is its counter's last value when the period has one counter
without variables; a period with counters per variable values has no single last value, so it
shows how many counters it has. A badge says when a counter of the current period has fewer values
left than the series' ``warn_remaining``.

"Issued today" is read from the ledger (series without one show none): among the most recent
``RECENT_LIMIT`` numbers of the current period, those issued since midnight in the series' time
zone. The cost stays bounded however long the ledger grows; a busier day shows as at least
``RECENT_LIMIT``.
"""

import datetime
import zoneinfo
from dataclasses import dataclass

import asyncpg

from app import series as series_sql
from app.definition import Series
from app.schemas import CounterValue

RECENT_LIMIT = 10_000

ISSUED_TODAY = """
SELECT p.series_id, count(*) FILTER (WHERE recent.issued_at >= p.since) AS issued
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS p (series_id, period, since)
CROSS JOIN LATERAL (
    SELECT n.issued_at FROM numbers AS n
    WHERE n.series_id = p.series_id AND n.period = p.period
    ORDER BY n.value DESC
    LIMIT $4
) AS recent
GROUP BY p.series_id
"""


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    series: Series
    period: str
    last_value: int | None
    # How many counters the current period has, when it keeps them per variable values.
    counters: int | None
    issued_today: int | None
    # Whether a counter of the current period has fewer values left than warn_remaining.
    running_low: bool

    @property
    def issued_today_at_least(self) -> bool:
        """True when the count reached the bound and the real number may be higher."""
        return self.issued_today is not None and self.issued_today >= RECENT_LIMIT


def _midnight(series: Series, now: datetime.datetime) -> datetime.datetime:
    today = series.today(now)
    return datetime.datetime.combine(today, datetime.time(), zoneinfo.ZoneInfo(series.timezone))


async def summaries(
    pool: asyncpg.Pool, found: list[Series], now: datetime.datetime
) -> list[SeriesSummary]:
    """``now`` is the issuer's clock, so the portal's "current period" is the one requests use."""
    periods = {s.id: s.current_period(now) for s in found}
    with_ledger = [s for s in found if s.ledger]
    async with pool.acquire() as conn:
        counted = await conn.fetch(
            ISSUED_TODAY,
            [s.id for s in with_ledger],
            [periods[s.id] for s in with_ledger],
            [_midnight(s, now) for s in with_ledger],
            RECENT_LIMIT,
        )
        issued = {r["series_id"]: r["issued"] for r in counted}
        current = {
            s.id: [c for c in await series_sql.counters(conn, s) if c.period == periods[s.id]]
            for s in found
        }
    return [
        _summary(s, periods[s.id], current[s.id], issued.get(s.id, 0) if s.ledger else None)
        for s in found
    ]


def _summary(
    series: Series, period: str, counters: list[CounterValue], issued_today: int | None
) -> SeriesSummary:
    low = any(series.running_low(c.last_value) for c in counters)
    if len(counters) > 1 or any(c.variables for c in counters):
        return SeriesSummary(series, period, None, len(counters), issued_today, low)
    last_value = counters[0].last_value if counters else None
    return SeriesSummary(series, period, last_value, None, issued_today, low)
