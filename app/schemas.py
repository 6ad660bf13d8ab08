"""Request and response bodies of the JSON API, with the validation every client shares.

The admin portal validates its forms with these same models, so a field error reads the same
in a browser as over HTTP.
"""

import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.formatting import TemplateError, parse_template
from app.periods import Reset, is_valid_timezone

MAX_BIGINT = 2**63 - 1
SERIES_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
VARIABLE_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"

Mode = Literal["gapless", "sequence", "cached"]
SeriesName = Annotated[str, Field(pattern=SERIES_NAME_PATTERN, examples=["invoice"])]
Variables = dict[
    Annotated[str, Field(pattern=VARIABLE_PATTERN)],
    Annotated[str, Field(pattern=VARIABLE_PATTERN)],
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_format(value: str) -> str:
    try:
        parse_template(value)
    except TemplateError as error:
        raise ValueError(str(error)) from None
    return value


def _check_timezone(value: str) -> str:
    if not is_valid_timezone(value):
        raise ValueError(f"unknown IANA time zone {value!r}")
    return value


class SeriesFields(StrictModel):
    """What defines a series, apart from its name; shared by create and update."""

    format: str = Field(
        min_length=1,
        max_length=200,
        examples=["INV-{YYYY}-{seq:06}"],
        description="Literal text and tokens: {seq} {seq:06} {YYYY} {YY} {MM} {DD} {Q} {FY} "
        "{series} {var:NAME}; {{ and }} are literal braces.",
    )
    mode: Mode = Field(
        default="gapless",
        description="gapless: no number skipped; sequence: PostgreSQL nextval, may skip; "
        "cached: blocks served from memory, fastest, may skip on restart.",
    )
    reset: Reset = Field(default="never", description="When the counter starts again.")
    start: int = Field(default=1, ge=0, le=MAX_BIGINT)
    step: int = Field(default=1, ge=1, le=1_000_000)
    max_value: int | None = Field(default=None, ge=1, le=MAX_BIGINT)
    timezone: str = Field(default="UTC", max_length=64, description="IANA name; decides 'today'.")
    fiscal_year_start: int = Field(default=1, ge=1, le=12, description="Month the year starts.")
    block_size: int = Field(default=100, ge=1, le=100_000, description="cached mode only.")
    ledger: bool | None = Field(
        default=None,
        description="Record every number. Always on for gapless; default off for the others.",
    )
    description: str = Field(default="", max_length=1000)

    _format = field_validator("format")(_check_format)
    _timezone = field_validator("timezone")(_check_timezone)


class SeriesCreate(SeriesFields):
    name: SeriesName


class SeriesUpdate(StrictModel):
    """Any subset of the fields; mode, reset, start, step and fiscal_year_start only before use."""

    format: str | None = Field(default=None, min_length=1, max_length=200)
    mode: Mode | None = None
    reset: Reset | None = None
    start: int | None = Field(default=None, ge=0, le=MAX_BIGINT)
    step: int | None = Field(default=None, ge=1, le=1_000_000)
    max_value: int | None = Field(default=None, ge=1, le=MAX_BIGINT)
    timezone: str | None = Field(default=None, max_length=64)
    fiscal_year_start: int | None = Field(default=None, ge=1, le=12)
    block_size: int | None = Field(default=None, ge=1, le=100_000)
    ledger: bool | None = None
    description: str | None = Field(default=None, max_length=1000)

    _format = field_validator("format")(lambda v: v if v is None else _check_format(v))
    _timezone = field_validator("timezone")(lambda v: v if v is None else _check_timezone(v))


class PeriodValue(BaseModel):
    period: str
    last_value: int | None


class SeriesOut(BaseModel):
    name: str
    format: str
    mode: Mode
    reset: Reset
    start: int
    step: int
    max_value: int | None
    timezone: str
    fiscal_year_start: int
    block_size: int
    ledger: bool
    description: str
    archived: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime
    periods: list[PeriodValue] | None = Field(
        default=None, description="Last value per period (for cached: the last value reserved)."
    )


class SeriesPage(BaseModel):
    items: list[SeriesOut]
    next_cursor: str | None


class NextRequest(StrictModel):
    date: datetime.date | None = Field(
        default=None, description="The document's date; decides the period. Default: today."
    )
    variables: Variables = Field(default_factory=dict)


class BatchRequest(NextRequest):
    count: int = Field(ge=1, description="How many numbers; at most the configured maximum.")


class IssuedNumber(BaseModel):
    series: str
    number: str
    value: int
    period: str
    date: datetime.date
    issued_at: datetime.datetime


class IssuedBatch(BaseModel):
    series: str
    period: str
    date: datetime.date
    issued_at: datetime.datetime
    count: int
    numbers: list[str]
    values: list[int]


NumberStatus = Literal["issued", "voided"]


class LedgerEntry(BaseModel):
    value: int
    number: str
    period: str
    date: datetime.date
    status: NumberStatus
    issued_at: datetime.datetime
    void_reason: str | None
    voided_at: datetime.datetime | None


class LedgerPage(BaseModel):
    items: list[LedgerEntry]
    next_cursor: str | None


class VoidRequest(StrictModel):
    reason: str = Field(min_length=1, max_length=500)


class Gap(BaseModel):
    first: int
    last: int
    count: int


class GapReport(BaseModel):
    period: str
    start: int
    last_value: int | None
    missing: int
    gaps: list[Gap]
