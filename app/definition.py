"""A series' definition as the issuing code reads it, and the counter each number belongs to.

A leaf module: the SQL modules (series, counters, sequences, ledger) and the issuing code all
import it, and it imports none of them.

Invariants, and why they hold:

- **One declaration of a series' fields.** ``Series`` extends ``SeriesFields``, the API model that
  states every field's type and bounds; the series SQL is built from its field names.
- **A version per definition.** Every change of a series bumps ``version`` in the transaction that
  makes it, under the series row's ``FOR UPDATE`` lock. Statements that take values lock the row
  ``FOR KEY SHARE`` (which conflicts with ``FOR UPDATE``) and compare the version, so a request that
  read an older definition takes nothing once a change committed: it reloads and starts again.
- **The format of a document date.** ``formats`` lists every format the series ever had, in the
  order they were set. A document dated ``day`` renders with the last-set format whose
  ``effective_from`` is on or before ``day`` (or that has none), so a change dated from a day on
  leaves earlier documents with the format they had.
- **Nothing is issued into a closed period.** ``check_open`` refuses a document date on or before
  ``closed_through``; issuing calls it when it resolves a request, and whatever else takes or
  records a number for a date calls it likewise. Closing is a change of the definition, so a
  request that read the definition before a close commits takes nothing once it has (the version
  check above): it reloads, and ``check_open`` refuses it.
- **The counter of a number** is its period (from the document date and the reset) and the values
  of the variables the number shows, unless the series shares one counter across variable values.
  Each visible counter thus counts ``start, start + step, …`` on its own.
"""

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from pydantic import ConfigDict

from app.formatting import Template, parse_template, two_digit_year_window
from app.periods import Reset, period_key, today_in
from app.problems import LedgerDisabled, PeriodClosed
from app.rules import NumberRules, number_rules
from app.schemas import (
    MAX_BIGINT,
    CounterValue,
    FormatOut,
    SeriesFields,
    SeriesOut,
    encode_variables,
)

# The columns an administrator sets, named once: the series SQL is built from this tuple.
FIELD_NAMES: tuple[str, ...] = tuple(SeriesFields.model_fields)


@dataclass(frozen=True, slots=True)
class Format:
    """One entry of a series' format history."""

    format: str
    effective_from: datetime.date | None
    set_at: datetime.datetime
    template: Template
    # The dates whose numbers this format can tell apart, when it cannot tell all of them apart.
    window: tuple[datetime.date, datetime.date] | None

    @classmethod
    def of(
        cls,
        source: str,
        effective_from: datetime.date | None,
        set_at: datetime.datetime,
        reset: Reset,
        fiscal_year_start: int,
    ) -> "Format":
        template = parse_template(source)
        window = two_digit_year_window(template, reset, fiscal_year_start)
        return cls(source, effective_from, set_at, template, window)


class StaleDefinition(Exception):
    """The series changed after this request read it; it took nothing and must start again."""


class CounterKey(NamedTuple):
    """Which counter a number takes its value from, within its series."""

    period: str
    variables: str  # "name=value" pairs sorted by name, joined by ","; "" for none


class Series(SeriesFields):
    """A series row with its format history, parsed once per version."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: int
    tenant_id: int
    name: str
    ledger: bool
    version: int
    created_at: datetime.datetime
    updated_at: datetime.datetime
    archived_at: datetime.datetime | None
    formats: tuple[Format, ...]

    @property
    def template(self) -> Template:
        """The format set last."""
        return self.formats[-1].template

    def format_for(self, day: datetime.date) -> Format:
        for entry in reversed(self.formats):
            if entry.effective_from is None or entry.effective_from <= day:
                return entry
        return self.formats[0]  # every series' first format has no effective_from

    def today(self, now: datetime.datetime) -> datetime.date:
        """The document date of a request that names none: the date in the series' time zone."""
        return today_in(self.timezone, now)

    def counter(
        self, day: datetime.date, template: Template, variables: Mapping[str, str]
    ) -> CounterKey:
        period = period_key(self.reset, day, self.fiscal_year_start)
        if self.shared_counter:
            return CounterKey(period, "")
        return CounterKey(period, encode_variables(template.variables, variables))

    def current_period(self, now: datetime.datetime) -> str:
        """The period a request without a date issues in at the instant ``now``."""
        return period_key(self.reset, self.today(now), self.fiscal_year_start)

    def check_open(self, day: datetime.date) -> None:
        """Refuse a document date in the series' closed period (PeriodClosed, a 409)."""
        if self.closed_through is not None and day <= self.closed_through:
            raise PeriodClosed(
                f"Series {self.name!r} is closed through {self.closed_through}: nothing is "
                f"issued for a document dated {day}. Send a date after {self.closed_through}."
            )

    def check_document_ref(self, document_ref: str | None) -> None:
        """Refuse a document reference the series cannot keep, having no ledger (LedgerDisabled,
        a 409), rather than lose it."""
        if document_ref is not None and not self.ledger:
            raise LedgerDisabled(
                f"Series {self.name!r} keeps no ledger, so it cannot keep a document_ref; send "
                "the request without one, or turn the ledger on."
            )

    @property
    def rules(self) -> NumberRules:
        return number_rules(self.number_profile, self.max_length, self.allowed_characters)

    def remaining(self, last_value: int) -> int:
        """How many values a counter whose last value is ``last_value`` has left."""
        return max(0, (self.highest_value - last_value) // self.step)

    def running_low(self, last_value: int | None) -> bool:
        """Whether a counter has fewer values left than ``warn_remaining``."""
        if self.warn_remaining is None or last_value is None:
            return False
        return self.remaining(last_value) < self.warn_remaining

    @property
    def low_water_value(self) -> int | None:
        """The value whose taking leaves a counter with fewer than ``warn_remaining`` values:
        exactly one request per counter takes it (values are never handed out twice)."""
        if self.warn_remaining is None:
            return None
        return max(self.start, self.highest_value - (self.warn_remaining - 1) * self.step)

    @property
    def highest_value(self) -> int:
        """The last value the series may issue: max_value (or the bigint limit) on the step grid."""
        ceiling = MAX_BIGINT if self.max_value is None else self.max_value
        return self.start + (ceiling - self.start) // self.step * self.step

    def fields(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in FIELD_NAMES}

    def to_out(self, counters: list[CounterValue] | None = None) -> SeriesOut:
        return SeriesOut(
            **self.fields(),
            name=self.name,
            archived=self.archived_at is not None,
            created_at=self.created_at,
            updated_at=self.updated_at,
            formats=[
                FormatOut(format=f.format, effective_from=f.effective_from, set_at=f.set_at)
                for f in self.formats
            ],
            counters=counters,
        )
