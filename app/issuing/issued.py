"""What an issuing request asks for and what it gets back, whatever the mode.

A request with a ``Hold`` reserves its numbers instead of issuing them (see app.reservations): the
values are taken from the counter exactly as for an issue, in the same transaction (for gapless,
the same group commit), and its answer carries the ``Reservation`` that holds them.

``render_numbers`` turns a series' values into its numbers, for issuing and for the counters and
numbers set by hand (``app.issuing.manual``) alike, so both refuse a number that cannot be
rendered the same way (422).
"""

import datetime
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.definition import CounterKey, Series
from app.formatting import NumberTooLong, Template, VariableError
from app.problems import InvalidRequest, NumberRuleBroken


def render_numbers(
    series: Series,
    template: Template,
    values: list[int],
    day: datetime.date,
    variables: Mapping[str, str],
) -> list[str]:
    """The numbers of ``values`` in ``template`` of ``series`` for ``day``; a number that cannot
    be rendered (a variable missing or invalid, too long) is the caller's mistake (422)."""
    try:
        return template.render_many(
            values,
            date=day,
            series=series.name,
            variables=variables,
            fiscal_year_start=series.fiscal_year_start,
        )
    except (VariableError, NumberTooLong) as error:
        raise InvalidRequest(str(error)) from None


@dataclass(frozen=True, slots=True)
class Claim:
    """An Idempotency-Key, scoped to its tenant and series, and the hash of the request body."""

    key: str
    request_hash: bytes


@dataclass(frozen=True, slots=True)
class Hold:
    """What a reservation asks for besides its numbers: how long to hold them."""

    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """The reservation that holds numbers just taken, as recorded with them."""

    id: uuid.UUID
    expires_at: datetime.datetime


@dataclass(frozen=True, slots=True)
class Issued:
    series: str
    period: str
    date: datetime.date
    issued_at: datetime.datetime
    values: list[int]
    numbers: list[str]
    document_ref: str | None = None  # kept in the ledger with every one of the numbers
    reservation: Reservation | None = None  # set when the numbers are reserved, not issued
    # The body stored for replays of an idempotent request: the answer sends these same bytes.
    body: bytes | None = None

    def answer(self, respond: "Respond") -> bytes:
        """The body of the answer: the one stored for replays, or else built by ``respond``."""
        return self.body if self.body is not None else respond(self)


@dataclass(frozen=True, slots=True)
class Replayed:
    """The stored answer to an earlier request with the same Idempotency-Key."""

    request_hash: bytes
    status: int | None  # None: the first request has not finished (it is still in flight)
    body: bytes | None


Outcome = Issued | Replayed
Respond = Callable[[Issued], bytes]


@dataclass(frozen=True, slots=True)
class Request:
    series: Series
    template: Template  # the format in force on the document's date
    counter: CounterKey
    date: datetime.date
    count: int
    variables: Mapping[str, str]
    claim: Claim | None
    # Builds the response body; for an idempotent request the same bytes are stored for replays.
    respond: Respond
    document_ref: str | None = None
    hold: Hold | None = None  # reserve the numbers instead of issuing them

    @property
    def period(self) -> str:
        return self.counter.period

    def render(self, values: list[int]) -> Issued:
        numbers = render_numbers(self.series, self.template, values, self.date, self.variables)
        broken = self.series.rules.check_numbers(numbers)
        if broken is not None:
            raise NumberRuleBroken(f"Series {self.series.name!r}: {broken}; nothing was issued.")
        return Issued(
            series=self.series.name,
            period=self.period,
            date=self.date,
            issued_at=datetime.datetime.now(datetime.UTC),
            values=values,
            numbers=numbers,
            document_ref=self.document_ref,
        )
