"""The one entry point for issuing numbers, whatever the series' mode.

It resolves the document date, the format in force on it and the counter the number belongs to,
checks what does not depend on the value (archived, the date window, variables, batch size),
and hands the request to its mode's issuer. Every mode has one (``ModeIssuer``), chosen by the
series' mode alone: gapless (app.issuing.gapless), sequence (app.issuing.sequences) and cached
(app.issuing.blocks). Each applies idempotency as part of taking the values: a request whose key
was already answered gets that answer back, byte for byte, and costs no number.

A document date in the series' closed period is refused here (``Series.check_open``), before any
mode takes a value. A counter running low (``warn_remaining``) is counted and audited once, for
the request that took the value after which fewer than ``warn_remaining`` are left.

Dates are bounded to a window (settings ``earliest_date`` and ``latest_date``), and a format that
shows the year as ``{YY}`` alone issues only for 2000-2099, so the period of every number can be
read back from it: no two periods render alike.
"""

import datetime
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import asyncpg

from app import audit, idempotency, metrics
from app import series as series_sql
from app.definition import CounterKey, Format, Series, StaleDefinition
from app.formatting import Template
from app.issuing.blocks import BlockIssuer
from app.issuing.counters import DEFAULT_LIMITS, CounterLimits
from app.issuing.gapless import GaplessIssuer
from app.issuing.issued import Claim, Hold, Issued, Outcome, Replayed, Request, Respond
from app.issuing.sequences import SequenceIssuer
from app.problems import Problem, SeriesArchived, Unavailable, field_error
from app.schemas import Mode, decode_variables


@dataclass(frozen=True, slots=True)
class Answer:
    """What goes back to the client: the stored bytes on a replay, fresh ones otherwise."""

    status: int
    body: bytes
    replayed: bool
    issued: Issued | None


# What "now" is when a request names no date; replaceable so that tests can set the time.
Clock = Callable[[], datetime.datetime]
# Reads a series again after StaleDefinition: the catalog's fresh copy in the service.
Reload = Callable[[Series], Awaitable[Series]]

# How often one request reads its series again because an administrator changed it meanwhile.
MAX_RELOADS = 5
# Who the audit trail says warned that a counter runs low: the service itself.
WARNING_ACTOR = "docnum"

logger = logging.getLogger("docnum.issuing")

T = TypeVar("T")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, slots=True)
class DateWindow:
    """The document dates the service issues for; any other date is refused with a 422."""

    earliest: datetime.date = datetime.date(2000, 1, 1)
    latest: datetime.date = datetime.date(2099, 12, 31)


class ModeIssuer(Protocol):
    """How one mode serves a request: its numbers, or the stored answer its key already got."""

    async def issue(self, request: Request) -> Outcome: ...


class Issuer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        idempotency_ttl_seconds: int,
        reload: Reload | None = None,
        window: DateWindow = DateWindow(),
        clock: Clock = utc_now,
        limits: CounterLimits = DEFAULT_LIMITS,
    ) -> None:
        self._pool = pool
        self._ttl = idempotency_ttl_seconds
        self._reload = reload or self._read_again
        self.window = window
        self.clock = clock
        self.blocks = BlockIssuer(pool, idempotency_ttl_seconds, limits)
        self._modes: Mapping[Mode, ModeIssuer] = {
            "gapless": GaplessIssuer(pool, idempotency_ttl_seconds, limits),
            "sequence": SequenceIssuer(pool, idempotency_ttl_seconds, limits),
            "cached": self.blocks,
        }

    def current_period(self, series: Series) -> str:
        """The period a request without a date issues in now."""
        return series.current_period(self.clock())

    async def issue(
        self,
        series: Series,
        *,
        count: int,
        date: datetime.date | None,
        variables: Mapping[str, str],
        claim: Claim | None,
        respond: Respond,
        document_ref: str | None = None,
        hold: Hold | None = None,
    ) -> Answer:
        """Issue ``count`` numbers, or replay the answer ``claim``'s key already got. With a
        ``hold``, reserve them instead (app.reservations): taken exactly as an issue takes them.

        A request that read a definition changed since takes nothing (StaleDefinition) and runs
        again on the series as it now is. A ``document_ref`` is kept with the numbers in the
        ledger; a series without one refuses it rather than lose it.
        """

        async def attempt(series: Series) -> Answer:
            try:
                series.check_document_ref(document_ref)
                template, counter, day = self.resolve(series, date, variables)
            except Problem as refusal:
                return await self._answer_despite(refusal, series, claim)
            request = Request(
                series,
                template,
                counter,
                day,
                count,
                variables,
                claim,
                respond,
                document_ref,
                hold,
            )
            outcome = await self._dispatch(request)
            if isinstance(outcome, Replayed):
                return _replay(claim, outcome)
            if hold is None:
                metrics.count_issued(series, len(outcome.values))
            await self._warn_if_low(request, outcome.values)
            return Answer(201, outcome.answer(respond), False, outcome)

        return await self.on_current(series, attempt)

    async def on_current(self, series: Series, change: Callable[[Series], Awaitable[T]]) -> T:
        """Run ``change`` on the series; again on its fresh definition while it raises
        StaleDefinition (the series changed meanwhile, and ``change`` took nothing), at most
        ``MAX_RELOADS`` times."""
        for _ in range(MAX_RELOADS):
            try:
                return await change(series)
            except StaleDefinition:
                series = await self._reload(series)
        raise Unavailable("The series is being changed; retry shortly.")

    async def _answer_despite(
        self, refusal: Problem, series: Series, claim: Claim | None
    ) -> Answer:
        """A retry still gets the answer its key was given before the series changed."""
        stored = None
        if claim is not None:
            stored = await idempotency.fresh_answer(self._pool, series, claim, self._ttl)
        if stored is None:
            raise refusal
        return _replay(claim, stored)

    def resolve(
        self, series: Series, date: datetime.date | None, variables: Mapping[str, str]
    ) -> tuple[Template, CounterKey, datetime.date]:
        """The request's date, the format in force on it and the counter its number takes; or
        why the series cannot serve it at all, whatever number it would get."""
        if series.archived_at is not None:
            raise SeriesArchived(f"Series {series.name!r} is archived and issues no numbers.")
        day = date or series.today(self.clock())
        entry = series.format_for(day)
        self.check_date(day, entry)
        series.check_open(day)
        missing = sorted(entry.template.variables - variables.keys())
        if missing:
            raise field_error("variables", f"missing {', '.join(missing)}")
        return entry.template, series.counter(day, entry.template, variables), day

    def check_date(self, day: datetime.date, entry: Format) -> None:
        """Refuse a document date outside the service's window, or one that ``entry`` cannot
        tell from a date a century away (its only year is ``{YY}``)."""
        window = self.window
        if not window.earliest <= day <= window.latest:
            raise field_error(
                "date", f"must be from {window.earliest} to {window.latest} (the service's window)"
            )
        if entry.window is not None and not entry.window[0] <= day <= entry.window[1]:
            raise field_error(
                "date",
                f"the format {entry.format!r} shows the year with two digits, which tells years "
                f"apart only from {entry.window[0].year} to {entry.window[1].year}",
            )

    async def _warn_if_low(self, request: Request, values: list[int]) -> None:
        """Count and audit a counter running low, once: for the request that took its
        ``low_water_value``. Failing to record the warning does not fail the request, whose
        numbers are issued already."""
        series = request.series
        low_water = series.low_water_value
        if low_water is None or not values[0] <= low_water <= values[-1] or low_water not in values:
            return
        remaining = series.remaining(values[-1])
        metrics.count_running_low(series)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await audit.record(
                    conn,
                    tenant_id=series.tenant_id,
                    actor=WARNING_ACTOR,
                    action="counter.running_low",
                    series=series.name,
                    details={
                        "period": request.counter.period,
                        "variables": decode_variables(request.counter.variables),
                        "remaining": remaining,
                        "warn_remaining": series.warn_remaining,
                    },
                )
        except (asyncpg.PostgresError, OSError, TimeoutError):
            logger.warning(
                "could not audit that series %r runs low (%d values left)", series.name, remaining
            )

    async def _read_again(self, series: Series) -> Series:
        return await series_sql.fetch(self._pool, series.tenant_id, series.name)

    async def _dispatch(self, request: Request) -> Outcome:
        return await self._modes[request.series.mode].issue(request)

    async def close(self) -> None:
        await self.blocks.close()


def _replay(claim: Claim | None, stored: Replayed) -> Answer:
    assert claim is not None
    return Answer(*idempotency.stored_answer(claim, stored), True, None)


def check_count(count: int, maximum: int) -> None:
    if count > maximum:
        raise field_error("count", f"must be at most {maximum}")
