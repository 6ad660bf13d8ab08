"""Request and response bodies of the JSON API, with the validation every client shares.

The admin portal validates its forms with these same models, so a field error reads the same
in a browser as over HTTP. Every model the OpenAPI document names is defined here, the problem
body included, so the document's schemas are read in one place (a test checks it).
"""

import datetime
import uuid
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.auth import Scope
from app.formatting import MAX_NUMBER_LENGTH, TemplateError, parse_template
from app.periods import Reset, is_valid_timezone
from app.rules import PROFILE_NAMES, parse_character_set

MAX_BIGINT = 2**63 - 1
SERIES_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
VARIABLE_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
PERIOD_PATTERN = r"^(all|[0-9]{4}(-[0-9]{2}){0,2})$"
# Text that becomes part of numbers, headers or one-line displays: no control characters.
LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
# Free text for people: tabs and line breaks allowed, other control characters not.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"

Mode = Literal["gapless", "sequence", "cached"]
SeriesName = Annotated[str, Field(pattern=SERIES_NAME_PATTERN, examples=["invoice"])]
Variables = dict[
    Annotated[str, Field(pattern=VARIABLE_PATTERN)],
    Annotated[str, Field(pattern=VARIABLE_PATTERN)],
]


# A counter's variable values in one string, as the ledger stores them and the `variables` query
# filter takes them: "name=value" pairs sorted by name, joined by ","; "" for none. Names and
# values never contain "=" or ",", so the encoding is unambiguous.
_PAIR = r"[A-Za-z0-9_-]{1,32}=[A-Za-z0-9_-]{1,32}"
COUNTER_VARIABLES_PATTERN = rf"^({_PAIR}(,{_PAIR})*)?$"


def encode_variables(names: Iterable[str], values: Mapping[str, str]) -> str:
    """The variables part of a counter key; every name must have a value."""
    return ",".join(f"{name}={values[name]}" for name in sorted(names))


def decode_variables(encoded: str) -> dict[str, str]:
    pairs = (item.partition("=") for item in encoded.split(",") if item)
    return {name: value for name, _, value in pairs}


def _decoded(value: object) -> object:
    return decode_variables(value) if isinstance(value, str) else value


CounterVariables = Annotated[dict[str, str], BeforeValidator(_decoded)]


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


# Each field's type and bounds, stated once: creating a series and changing one share them.
Format = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=LINE_PATTERN),
    AfterValidator(_check_format),
]
Start = Annotated[int, Field(ge=0, le=MAX_BIGINT)]
Step = Annotated[int, Field(ge=1, le=1_000_000)]
MaxValue = Annotated[int, Field(ge=1, le=MAX_BIGINT)]
Timezone = Annotated[str, Field(max_length=64), AfterValidator(_check_timezone)]
FiscalYearStart = Annotated[int, Field(ge=1, le=12)]
BlockSize = Annotated[int, Field(ge=1, le=100_000)]
Description = Annotated[str, Field(max_length=1000, pattern=TEXT_PATTERN)]
DateOrder = Literal["off", "strict"]
# Named rules for the numbers of one country's tax documents (app.rules says where each is from).
NumberProfile = Literal["in-gst", "it-sdi", "fr-einvoice", "es-aeat", "pt-saft"]
assert get_args(NumberProfile) == PROFILE_NAMES
MaxLength = Annotated[int, Field(ge=1, le=MAX_NUMBER_LENGTH)]


def _check_character_set(value: str) -> str:
    parse_character_set(value)
    return value


AllowedCharacters = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=LINE_PATTERN, examples=["A-Za-z0-9/-"]),
    AfterValidator(_check_character_set),
]
WarnRemaining = Annotated[int, Field(ge=1, le=MAX_BIGINT)]
# The document that carries a number (an invoice id, an order reference); bounded like the
# ledger's column (migrations/0004_ledger_references.sql).
DocumentRef = Annotated[
    str, Field(min_length=1, max_length=200, pattern=LINE_PATTERN, examples=["SO-2026-0042"])
]

# Why a person did something (voided a number, set a counter), for the ledger and the audit.
Reason = Annotated[str, Field(min_length=1, max_length=500, pattern=TEXT_PATTERN)]


class SeriesFields(StrictModel):
    """What defines a series, apart from its name; shared by create and update."""

    format: Format = Field(
        examples=["INV-{YYYY}-{seq:06}"],
        description="Literal text and tokens: {seq} {seq:06} {YYYY} {YY} {MM} {DD} {Q} {FY} "
        "{series} {var:NAME}; {{ and }} are literal braces. {YY} alone (no {YYYY} or {FY}) "
        "issues only for dates in 2000-2099 when the counter resets.",
    )
    mode: Mode = Field(
        default="gapless",
        description="gapless: no number skipped; sequence: PostgreSQL nextval, may skip; "
        "cached: blocks served from memory, fastest, may skip on restart.",
    )
    reset: Reset = Field(default="never", description="When the counter starts again.")
    start: Start = 1
    step: Step = 1
    max_value: MaxValue | None = None
    timezone: Timezone = Field(default="UTC", description="IANA name; decides 'today'.")
    fiscal_year_start: FiscalYearStart = Field(default=1, description="Month the year starts.")
    block_size: BlockSize = Field(
        default=100,
        description="cached mode only: the fewest values a block holds (a busy counter's blocks "
        "grow to last DOCNUM_CACHED_BLOCK_SECONDS, up to 100 times this).",
    )
    ledger: bool | None = Field(
        default=None,
        description="Record every number. Always on for gapless; default off for the others.",
    )
    description: Description = ""
    shared_counter: bool = Field(
        default=False,
        description="false (default): each combination of period and {var:...} values counts "
        "on its own (PO-BR07-0001, PO-BR08-0001, PO-BR07-0002), so every sequence a reader "
        "sees is gapless. true: one counter per period for all variable values, where the "
        "business wants numbers to run across them (PO-BR07-0001, PO-BR08-0002).",
    )
    date_order: DateOrder = Field(
        default="off",
        description="strict: a number's document date is never earlier than the last one its "
        "counter issued; an earlier date is refused (409 date-order). Gapless series only.",
    )
    closed_through: datetime.date | None = Field(
        default=None,
        description="Nothing is issued for document dates up to and including this day (409 "
        "period-closed). Moves forward only; moving it back needs reopen_reason.",
    )
    number_profile: NumberProfile | None = Field(
        default=None,
        description="A country's rules for invoice numbers: in-gst (India, 16 characters of "
        "A-Za-z0-9/-), it-sdi (Italy, 20), fr-einvoice (France, 35), es-aeat (Spain, 60), "
        "pt-saft (Portugal, 60, 'TYPE SERIES/NUMBER').",
    )
    max_length: MaxLength | None = Field(
        default=None, description="The longest number the series may render (at most 64)."
    )
    allowed_characters: AllowedCharacters | None = Field(
        default=None,
        description="The only characters numbers may hold: single characters and ranges such "
        "as A-Z; a '-' first or last stands for itself.",
    )
    warn_remaining: WarnRemaining | None = Field(
        default=None,
        description="Warn (metric, audit entry, portal badge) when fewer values than this are "
        "left in a counter below max_value.",
    )


class SeriesCreate(SeriesFields):
    name: SeriesName
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "invoice",
                    "format": "INV-{YYYY}-{seq:06}",
                    "mode": "gapless",
                    "reset": "yearly",
                    "timezone": "Europe/Berlin",
                    "description": "Outgoing invoices",
                }
            ]
        }
    )


class SeriesUpdate(StrictModel):
    """Any subset of the fields; mode, reset, start, step, fiscal_year_start and shared_counter
    only before the first number."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"format": "INV/{YYYY}/{seq:06}", "effective_from": "2027-01-01"},
                {"description": "Outgoing invoices, new layout"},
            ]
        }
    )

    format: Format | None = None
    effective_from: datetime.date | None = Field(
        default=None,
        description="With format: the first document date the new format applies to; earlier "
        "dates keep the format they had. Left out: every date, from now on.",
    )
    mode: Mode | None = None
    reset: Reset | None = None
    start: Start | None = None
    step: Step | None = None
    max_value: MaxValue | None = None
    timezone: Timezone | None = None
    fiscal_year_start: FiscalYearStart | None = None
    block_size: BlockSize | None = None
    ledger: bool | None = None
    description: Description | None = None
    shared_counter: bool | None = None
    date_order: DateOrder | None = None
    closed_through: datetime.date | None = None
    reopen_reason: Reason | None = Field(
        default=None,
        description="With closed_through moved back (or null): why closed days open again; "
        "recorded in the audit trail.",
    )
    number_profile: NumberProfile | None = None
    max_length: MaxLength | None = None
    allowed_characters: AllowedCharacters | None = None
    warn_remaining: WarnRemaining | None = None

    @field_validator("*")
    @classmethod
    def _null_only_where_meaningful(cls, value: object, info: ValidationInfo) -> object:
        """null clears a limit (max_value, closed_through, a number rule, warn_remaining) and
        puts ledger back to its mode's default; any other field can only be left out, since a
        series cannot be without it."""
        if value is None and info.field_name not in NULLABLE_FIELDS:
            raise ValueError("cannot be null; leave the field out to keep its value")
        return value

    @model_validator(mode="after")
    def _effective_from_dates_a_format(self) -> "SeriesUpdate":
        if "effective_from" in self.model_fields_set and "format" not in self.model_fields_set:
            raise ValueError("effective_from dates a new format; send format with it")
        if (
            "reopen_reason" in self.model_fields_set
            and "closed_through" not in self.model_fields_set
        ):
            raise ValueError("reopen_reason explains moving closed_through back; send it with it")
        return self


# The fields a change may set to null.
NULLABLE_FIELDS = frozenset(
    {
        "max_value",
        "ledger",
        "closed_through",
        "number_profile",
        "max_length",
        "allowed_characters",
        "warn_remaining",
    }
)


class CounterValue(BaseModel):
    period: str
    variables: CounterVariables = Field(
        description="The {var:...} values this counter is kept for ({} when shared or none)."
    )
    last_value: int | None


class FormatOut(BaseModel):
    format: str
    effective_from: datetime.date | None = Field(
        description="Documents dated from this day on render with this format, until a format "
        "set later covers their date; null: every date."
    )
    set_at: datetime.datetime


SERIES_EXAMPLE: dict[str, Any] = {
    "name": "invoice",
    "format": "INV-{YYYY}-{seq:06}",
    "mode": "gapless",
    "reset": "yearly",
    "start": 1,
    "step": 1,
    "max_value": None,
    "timezone": "Europe/Berlin",
    "fiscal_year_start": 1,
    "block_size": 100,
    "ledger": True,
    "description": "Outgoing invoices",
    "archived": False,
    "created_at": "2026-01-05T09:00:00Z",
    "updated_at": "2026-01-05T09:00:00Z",
    "shared_counter": False,
    "date_order": "strict",
    "closed_through": "2025-12-31",
    "number_profile": "fr-einvoice",
    "max_length": None,
    "allowed_characters": None,
    "warn_remaining": 1000,
    "formats": [
        {"format": "INV-{YYYY}-{seq:06}", "effective_from": None, "set_at": "2026-01-05T09:00:00Z"}
    ],
    "counters": [{"period": "2026", "variables": {}, "last_value": 123}],
}


class SeriesOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SERIES_EXAMPLE]})

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
    shared_counter: bool
    date_order: DateOrder
    closed_through: datetime.date | None
    number_profile: NumberProfile | None
    max_length: int | None
    allowed_characters: str | None
    warn_remaining: int | None
    archived: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime
    formats: list[FormatOut] = Field(description="Every format the series had, oldest first.")
    counters: list[CounterValue] | None = Field(
        default=None,
        description="Last value per counter: per period and variable values (for cached: the "
        "last value reserved).",
    )


class Page(BaseModel):
    """What every page of a list has besides its items."""

    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page (the `Link` header with "
        '`rel="next"` has its URL); null on the last page.'
    )
    has_more: bool = Field(description="Whether a next page follows (next_cursor is set).")


class SeriesPage(Page):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [SERIES_EXAMPLE],
                    "next_cursor": None,
                    "has_more": False,
                }
            ]
        }
    )

    items: list[SeriesOut]


class NextRequest(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"date": "2026-03-31"}]})

    date: datetime.date | None = Field(
        default=None, description="The document's date; decides the period. Default: today."
    )
    variables: Variables = Field(default_factory=dict)
    document_ref: DocumentRef | None = Field(
        default=None,
        description="The document that carries the number (every number of a batch): kept in "
        "the ledger, found by `GET /series/{name}/numbers?document_ref=`. Needs a ledger.",
    )

    def fingerprint(self) -> dict[str, Any]:
        """What an Idempotency-Key's request hash covers: the body, without a reference when
        none was sent, so a request hashes as it did before references existed."""
        body = self.model_dump(mode="json")
        if body["document_ref"] is None:
            del body["document_ref"]
        return body


class BatchRequest(NextRequest):
    model_config = ConfigDict(json_schema_extra={"examples": [{"count": 3, "date": "2026-03-31"}]})

    count: int = Field(ge=1, description="How many numbers; at most the configured maximum.")


class IssuedNumber(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "series": "invoice",
                    "number": "INV-2026-000123",
                    "value": 123,
                    "period": "2026",
                    "date": "2026-03-31",
                    "issued_at": "2026-03-31T14:05:09.123456Z",
                }
            ]
        }
    )

    series: str
    number: str
    value: int
    period: str
    date: datetime.date
    issued_at: datetime.datetime


class IssuedBatch(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "series": "invoice",
                    "period": "2026",
                    "date": "2026-03-31",
                    "issued_at": "2026-03-31T14:05:09.123456Z",
                    "count": 3,
                    "numbers": ["INV-2026-000124", "INV-2026-000125", "INV-2026-000126"],
                    "values": [124, 125, 126],
                }
            ]
        }
    )

    series: str
    period: str
    date: datetime.date
    issued_at: datetime.datetime
    count: int
    numbers: list[str]
    values: list[int]


NumberStatus = Literal["issued", "reserved", "voided"]


class LedgerEntry(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "value": 123,
                    "number": "INV-2026-000123",
                    "period": "2026",
                    "variables": {},
                    "date": "2026-03-31",
                    "status": "voided",
                    "issued_at": "2026-03-31T14:05:09.123456Z",
                    "void_reason": "Order cancelled before delivery",
                    "voided_at": "2026-04-01T08:00:00Z",
                    "document_ref": "SO-2026-0042",
                    "external": False,
                }
            ]
        }
    )

    value: int
    number: str
    period: str
    variables: CounterVariables = Field(
        description="The {var:...} values of the number's counter ({} when shared or none)."
    )
    date: datetime.date
    status: NumberStatus
    issued_at: datetime.datetime
    void_reason: str | None
    voided_at: datetime.datetime | None
    document_ref: str | None = Field(description="The document that carries the number.")
    external: bool = Field(
        description="Not issued here: recorded from elsewhere (`POST /series/{name}/numbers`), "
        "or, voided, a value a counter passed when set by hand (a number recorded from "
        "elsewhere may take its place)."
    )


class LedgerPage(Page):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "value": 123,
                            "number": "INV-2026-000123",
                            "period": "2026",
                            "variables": {},
                            "date": "2026-03-31",
                            "status": "issued",
                            "issued_at": "2026-03-31T14:05:09.123456Z",
                            "void_reason": None,
                            "voided_at": None,
                            "document_ref": "SO-2026-0042",
                            "external": False,
                        }
                    ],
                    "next_cursor": None,
                    "has_more": False,
                }
            ]
        }
    )

    items: list[LedgerEntry]


ReservationStatus = Literal["reserved", "confirmed", "released", "expired"]


class ReserveRequest(NextRequest):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"date": "2026-03-31", "document_ref": "SO-2026-0042", "ttl_seconds": 300}]
        }
    )

    count: int = Field(
        default=1, ge=1, description="How many numbers; at most the configured maximum batch."
    )
    document_ref: DocumentRef | None = Field(
        default=None,
        description="The document the numbers are for, kept in the ledger with them (a series "
        "without a ledger refuses one); confirm may replace it.",
    )
    ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        description="How long the numbers are held unless confirmed or released; at most the "
        "configured maximum. Default: the configured default.",
    )


class ConfirmRequest(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"document_ref": "INV-DRAFT-17"}]})

    document_ref: DocumentRef | None = Field(
        default=None,
        description="The document that carries the numbers; default: the one given at reserve.",
    )


class ReservationOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "7d0c4c52-5a8e-4c57-9a55-1f3c0e1b2a3d",
                    "series": "invoice",
                    "status": "reserved",
                    "period": "2026",
                    "date": "2026-03-31",
                    "count": 1,
                    "numbers": ["INV-2026-000123"],
                    "values": [123],
                    "document_ref": "SO-2026-0042",
                    "reserved_at": "2026-03-31T14:05:09.123456Z",
                    "expires_at": "2026-03-31T14:10:09.123456Z",
                    "settled_at": None,
                }
            ]
        }
    )

    id: uuid.UUID
    series: str
    status: ReservationStatus = Field(
        description="reserved: held until expires_at; confirmed: issued; released or expired: "
        "no longer held (handed out again, or voided)."
    )
    period: str
    date: datetime.date
    count: int
    numbers: list[str]
    values: list[int]
    document_ref: str | None
    reserved_at: datetime.datetime
    expires_at: datetime.datetime
    settled_at: datetime.datetime | None = Field(
        description="When it was confirmed, released or expired; null while reserved."
    )


class VoidRequest(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "Order cancelled before delivery"}]}
    )

    reason: Reason


class NumberPatch(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"document_ref": "SO-2026-0042"}]})

    document_ref: DocumentRef = Field(
        description="The document that carries the number; replaces the one it had, if any."
    )


class CounterSet(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "last_value": 4711,
                    "reason": "Go-live: numbers up to 4711 were issued by the previous system",
                }
            ]
        }
    )

    last_value: Annotated[int, Field(ge=0, le=MAX_BIGINT)] = Field(
        description="The last value taken: the next number gets the one after. Only upwards."
    )
    reason: Reason = Field(description="Why; kept as the void reason of every value passed.")
    variables: Variables = Field(
        default_factory=dict,
        description="The {var:...} values of the counter, as `next` takes them.",
    )
    date: datetime.date | None = Field(
        default=None,
        description="A date in the period, that the values a gapless counter passes are recorded "
        "with; default: the period's first day.",
    )


class CounterChange(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "period": "2026",
                    "variables": {},
                    "previous": None,
                    "last_value": 4711,
                    "voided": 4711,
                }
            ]
        }
    )

    period: str
    variables: CounterVariables
    previous: int | None = Field(description="The counter's last value before; null: none.")
    last_value: int
    voided: int = Field(description="Values recorded as voided with the reason (gapless).")


class ExternalNumber(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"number": "INV-2026-004712", "date": "2026-05-04", "document_ref": "PAPER-17"}
            ]
        }
    )

    number: str = Field(min_length=1, max_length=64, pattern=LINE_PATTERN)
    date: datetime.date = Field(description="The document's date; decides the period.")
    document_ref: DocumentRef | None = None


class NextPreview(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "series": "invoice",
                    "number": "INV-2026-000124",
                    "value": 124,
                    "period": "2026",
                    "variables": {},
                    "date": "2026-03-31",
                    "mode": "gapless",
                }
            ]
        }
    )

    series: str
    number: str
    value: int
    period: str
    variables: CounterVariables
    date: datetime.date
    mode: Mode = Field(
        description="gapless and sequence: the next request gets this number unless another "
        "comes first. cached: the first value no process holds; a process holding a block hands "
        "out lower ones first."
    )


# The most runs a gap report lists; its totals count every run.
MAX_GAP_RUNS = 10_000


class Gap(BaseModel):
    first: int
    last: int
    count: int


class GapReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "period": "2026",
                    "variables": {},
                    "start": 1,
                    "last_value": 130,
                    "missing": 2,
                    "runs": 1,
                    "truncated": False,
                    "gaps": [{"first": 57, "last": 58, "count": 2}],
                }
            ]
        }
    )

    period: str
    variables: CounterVariables
    start: int
    last_value: int | None
    missing: int = Field(description="Values missing in the whole period, listed or not.")
    runs: int = Field(description="Runs of consecutive missing values in the whole period.")
    truncated: bool = Field(
        description=f"True when `gaps` lists only the first {MAX_GAP_RUNS:,} of `runs` runs."
    )
    gaps: list[Gap]


ChainProblem = Literal[
    "event-missing", "event-altered", "head-moved", "row-altered", "row-missing", "row-unrecorded"
]


class ChainBreak(BaseModel):
    """The first link of a counter's chain that does not hold."""

    problem: ChainProblem = Field(
        description="`event-missing`: an event was deleted; `event-altered`: an event's content "
        "or hash was changed; `head-moved`: the counter's head is not its last event (events "
        "added or removed at the end); `row-altered`: a ledger row differs from its last event; "
        "`row-missing`: an event left a row that the ledger no longer holds; `row-unrecorded`: a "
        "ledger row that no event recorded."
    )
    seq: int | None = Field(description="The event (1 is the first); null for an unrecorded row.")
    value: int | None = Field(description="The ledger row concerned, if any.")
    expected: str | None = Field(
        description="What the chain says: a hash (hex), `seq:hash`, or the row as JSON."
    )
    found: str | None = Field(description="What the database holds instead, in the same form.")
    detail: str


class CounterChain(BaseModel):
    variables: str = Field(description="The counter's variable values, as the ledger stores them.")
    events: int = Field(description="How many events the counter's head says its chain holds.")
    head: str = Field(description="The head: the last event's SHA-256, hex (64 zeros: none).")
    intact: bool
    broken: ChainBreak | None


class ChainReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "series": "invoices",
                    "period": "2026",
                    "intact": False,
                    "counters": [
                        {
                            "variables": "",
                            "events": 130,
                            "head": "9f2c" + "0" * 60,
                            "intact": False,
                            "broken": {
                                "problem": "row-altered",
                                "seq": 57,
                                "value": 57,
                                "expected": '{"date":"2026-03-31",...,"number":"INV-2026-000057"}',
                                "found": '{"date":"2026-03-31",...,"number":"INV-2026-000058"}',
                                "detail": "The row of value 57 differs from what event 57 "
                                "recorded.",
                            },
                        }
                    ],
                }
            ]
        }
    )

    series: str
    period: str
    intact: bool = Field(description="True when every counter of the period is intact.")
    counters: list[CounterChain]


KeyName = Annotated[
    str, Field(max_length=100, pattern=LINE_PATTERN, description="Who or what uses the key.")
]


KEY_EXAMPLE: dict[str, Any] = {
    "prefix": "3f9a1c2e",
    "scope": "issue",
    "name": "billing service",
    "created_at": "2026-01-05T09:00:00Z",
    "last_used_at": "2026-03-31T14:05:09Z",
    "revoked_at": None,
}


class KeyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [KEY_EXAMPLE]})

    prefix: str
    scope: Scope
    name: str
    created_at: datetime.datetime
    last_used_at: datetime.datetime | None
    revoked_at: datetime.datetime | None


class NewKey(KeyOut):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                KEY_EXAMPLE
                | {
                    "last_used_at": None,
                    "key": "dn_3f9a1c2e_q8W0sVx3h1cJ7nR2kP5tY9bL4mZ6dF8gA0eU1iO3wQ",
                }
            ]
        }
    )

    key: str


class KeyPage(Page):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [KEY_EXAMPLE], "next_cursor": None, "has_more": False}]
        }
    )

    items: list[KeyOut]


class KeyCreate(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"scope": "issue", "name": "billing service"}]}
    )

    scope: Scope = "issue"
    name: KeyName = ""


Action = Literal[
    "series.created",
    "series.changed",
    "series.closed",
    "series.reopened",
    "counter.running_low",
    "series.archived",
    "series.restored",
    "number.voided",
    "number.annotated",
    "number.recorded",
    "counter.set",
    "key.created",
    "key.revoked",
]


class AuditEntry(BaseModel):
    id: int
    at: datetime.datetime
    actor: str
    action: Action
    series: str | None
    details: dict[str, Any]


class AuditPage(Page):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "id": 42,
                            "at": "2026-01-05T09:00:00Z",
                            "actor": "key 3f9a1c2e",
                            "action": "series.created",
                            "series": "invoice",
                            "details": {"format": "INV-{YYYY}-{seq:06}", "mode": "gapless"},
                        }
                    ],
                    "next_cursor": None,
                    "has_more": False,
                }
            ]
        }
    )

    items: list[AuditEntry]


class FieldError(BaseModel):
    field: str = Field(examples=["count"], description="Dotted path of the offending input.")
    message: str


class ProblemDetail(BaseModel):
    """The body of every error response (RFC 9457), as the OpenAPI document describes it."""

    type: str = Field(
        examples=["/problems/series-not-found"], description="Stable; switch on this."
    )
    title: str
    status: int
    detail: str = Field(description="For humans; may change.")
    instance: str | None = Field(default=None, description="The path that was requested.")
    errors: list[FieldError] | None = Field(
        default=None, description="One entry per invalid input (422 only)."
    )


class ProblemType(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/series-not-found",
                    "title": "Series not found",
                    "status": 404,
                    "description": "No series of that name in your tenant.",
                }
            ]
        }
    )

    type: str
    title: str
    status: int
    description: str
