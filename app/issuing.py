"""The one entry point for issuing numbers, whatever the series' mode.

It resolves the document date and period, checks what does not depend on the value (archived,
variables, batch size), dispatches to the mode, and applies idempotency: a request whose key
was already answered gets that answer back, byte for byte, and costs no number.
"""

import datetime
import functools
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from app import idempotency, metrics
from app.blocks import BlockIssuer
from app.coalesce import Coalescer
from app.database import Connection, round_trip_limit
from app.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    Problem,
    SeriesArchived,
    field_error,
)
from app.gapless import GaplessIssuer
from app.issued import Claim, Issued, Outcome, Replayed, Request, Respond
from app.ledger import record_numbers
from app.periods import period_key, today_in
from app.sequences import SequenceIssuer
from app.series import Series


@dataclass(frozen=True, slots=True)
class Answer:
    """What goes back to the client: the stored bytes on a replay, fresh ones otherwise."""

    status: int
    body: bytes
    replayed: bool
    issued: Issued | None


# What "now" is when a request names no date; replaceable so that tests can set the time.
Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def document_date(
    series: Series, date: datetime.date | None, now: datetime.datetime | None = None
) -> datetime.date:
    """The date a request names, else the date on a wall clock in the series' time zone."""
    return date or today_in(series.timezone, now or utc_now())


class Issuer:
    def __init__(
        self, pool: asyncpg.Pool, *, idempotency_ttl_seconds: int, clock: Clock = utc_now
    ) -> None:
        self._pool = pool
        self._ttl = idempotency_ttl_seconds
        self.clock = clock
        self.gapless = GaplessIssuer(pool, idempotency_ttl_seconds)
        self.blocks = BlockIssuer(pool)
        self.sequences = SequenceIssuer()
        self._sequence_groups = Coalescer(round_trip_limit(pool))

    def request(
        self,
        series: Series,
        *,
        count: int,
        date: datetime.date | None,
        variables: dict[str, str],
        claim: Claim | None,
        respond: Respond,
    ) -> Request:
        day = document_date(series, date, self.clock())
        period = period_key(series.reset, day, series.fiscal_year_start)
        return Request(series, period, day, count, variables, claim, respond)

    def current_period(self, series: Series) -> str:
        """The period a request without a date issues in now."""
        today = document_date(series, None, self.clock())
        return period_key(series.reset, today, series.fiscal_year_start)

    async def issue(self, request: Request) -> Answer:
        refusal = _refusal(request)
        if refusal is not None:
            # A retry still gets the answer its key was given before the series changed.
            stored = None
            if request.claim is not None:
                stored = await idempotency.fresh_answer(
                    self._pool, request.series, request.claim, self._ttl
                )
            if stored is None:
                raise refusal
            return _replay(request, stored)
        outcome = await self._dispatch(request)
        if isinstance(outcome, Replayed):
            return _replay(request, outcome)
        metrics.count_issued(request.series, len(outcome.values))
        return Answer(201, request.respond(outcome), False, outcome)

    async def _dispatch(self, request: Request) -> Outcome:
        mode = request.series.mode
        if mode == "gapless":
            return await self.gapless.issue(request)
        series, period = request.series, request.period
        if request.claim is None and not series.ledger:
            if mode == "cached":
                return request.render(await self.blocks.take(series, period, request.count))
            fetch = functools.partial(self._sequence_values, series, period)
            return request.render(
                await self._sequence_groups.take((series.id, period), request.count, fetch)
            )
        async with self._pool.acquire() as conn:
            if request.claim is None:
                return await self._take_and_record(conn, request)
            async with conn.transaction():
                series, claim = request.series, request.claim
                if not await idempotency.claim(conn, series, [claim], self._ttl):
                    return (await idempotency.replays(conn, series, [claim]))[claim.key]
                issued = await self._take_and_record(conn, request)
                await idempotency.store(conn, series, [(claim, request.respond(issued))])
                return issued

    async def _sequence_values(self, series: Series, period: str, count: int) -> list[int]:
        async with self._pool.acquire() as conn:
            return await self.sequences.take(conn, series, period, count)

    async def _take_and_record(self, conn: Connection, request: Request) -> Issued:
        series, period, count = request.series, request.period, request.count
        if series.mode == "sequence":
            values = await self.sequences.take(conn, series, period, count)
        else:
            values = await self.blocks.take(series, period, count, conn)
        issued = request.render(values)
        if series.ledger:
            await record_numbers(conn, series, period, [issued])
        return issued

    async def close(self) -> None:
        await self.blocks.close()


def _refusal(request: Request) -> Problem | None:
    """Why the series cannot serve this request at all, whatever number it would get."""
    series = request.series
    if series.archived_at is not None:
        return SeriesArchived(f"Series {series.name!r} is archived and issues no numbers.")
    missing = sorted(series.template.variables - request.variables.keys())
    if missing:
        return field_error("variables", f"missing {', '.join(missing)}")
    return None


def _replay(request: Request, stored: Replayed) -> Answer:
    assert request.claim is not None
    if stored.request_hash != request.claim.request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used for a different request; use a new key."
        )
    if stored.status is None or stored.body is None:
        raise IdempotencyKeyInFlight(
            "The first request with this key has not finished; retry shortly.",
            headers={"Retry-After": "1"},
        )
    return Answer(stored.status, stored.body, True, None)


def check_count(count: int, maximum: int) -> None:
    if count > maximum:
        raise field_error("count", f"must be at most {maximum}")
