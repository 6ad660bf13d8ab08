"""What the service answers, as immutable typed values.

Every value read from one answer is an :class:`Answer`: it carries the service's request id
(``X-Request-ID``) and whether the answer was a replay (``Idempotent-Replayed``). Neither counts
in comparisons, so a replayed answer equals the first one.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """``request_id``: the service's ``X-Request-ID`` for the answer; ``replayed``: whether it
    is the stored answer of an earlier request with the same Idempotency-Key."""

    request_id: str | None = field(default=None, compare=False, repr=False)
    replayed: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class IssuedNumber(Answer):
    """One number, as answered by ``POST /series/{name}/next``."""

    series: str
    number: str
    value: int
    period: str
    date: datetime.date
    issued_at: datetime.datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **meta: Any) -> IssuedNumber:
        return cls(
            **meta,
            series=str(data["series"]),
            number=str(data["number"]),
            value=int(data["value"]),
            period=str(data["period"]),
            date=datetime.date.fromisoformat(data["date"]),
            issued_at=datetime.datetime.fromisoformat(data["issued_at"]),
        )


@dataclass(frozen=True, slots=True)
class IssuedBatch(Answer):
    """Numbers issued together, as answered by ``POST /series/{name}/batch``.

    ``numbers[i]`` is the formatted form of ``values[i]``; all share one period and date.
    """

    series: str
    period: str
    date: datetime.date
    issued_at: datetime.datetime
    count: int
    numbers: tuple[str, ...]
    values: tuple[int, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **meta: Any) -> IssuedBatch:
        return cls(
            **meta,
            series=str(data["series"]),
            period=str(data["period"]),
            date=datetime.date.fromisoformat(data["date"]),
            issued_at=datetime.datetime.fromisoformat(data["issued_at"]),
            count=int(data["count"]),
            numbers=tuple(str(n) for n in data["numbers"]),
            values=tuple(int(v) for v in data["values"]),
        )


@dataclass(frozen=True, slots=True)
class Reservation(Answer):
    """Numbers held until confirmed, released or expired, as answered by reserving, reading,
    confirming and releasing a reservation.

    ``status`` is ``reserved`` (held until ``expires_at``, by the service's clock), ``confirmed``
    (issued), ``released`` or ``expired`` (no longer held); ``settled_at`` is when it left
    ``reserved``. ``number`` is the first (for one number, the only) of ``numbers``.
    """

    id: str
    series: str
    status: str
    period: str
    date: datetime.date
    count: int
    numbers: tuple[str, ...]
    values: tuple[int, ...]
    document_ref: str | None
    reserved_at: datetime.datetime
    expires_at: datetime.datetime
    settled_at: datetime.datetime | None

    @property
    def number(self) -> str:
        return self.numbers[0]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **meta: Any) -> Reservation:
        return cls(
            **meta,
            id=str(data["id"]),
            series=str(data["series"]),
            status=str(data["status"]),
            period=str(data["period"]),
            date=datetime.date.fromisoformat(data["date"]),
            count=int(data["count"]),
            numbers=tuple(str(n) for n in data["numbers"]),
            values=tuple(int(v) for v in data["values"]),
            document_ref=None if data["document_ref"] is None else str(data["document_ref"]),
            reserved_at=_timestamp(data["reserved_at"]),
            expires_at=_timestamp(data["expires_at"]),
            settled_at=_maybe_timestamp(data["settled_at"]),
        )


def _timestamp(text: str) -> datetime.datetime:
    """An ISO 8601 timestamp; the ledger writes UTC as ``Z``, which Python 3.10 cannot parse."""
    return datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def _maybe_timestamp(text: str | None) -> datetime.datetime | None:
    return None if text is None else _timestamp(text)


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)


def _maybe_date(text: str | None) -> datetime.date | None:
    return None if text is None else datetime.date.fromisoformat(text)


@dataclass(frozen=True, slots=True)
class LedgerEntry(Answer):
    """One number as the ledger records it, as answered by ``GET /series/{name}/numbers/{number}``,
    by voiding it and by listing the ledger. ``void_reason`` and ``voided_at`` are set once it is
    voided; ``variables`` are the ``{var:…}`` values of its counter (empty when shared or none)."""

    number: str
    value: int
    period: str
    date: datetime.date
    issued_at: datetime.datetime
    status: str
    void_reason: str | None
    voided_at: datetime.datetime | None
    variables: Mapping[str, str] = field(default_factory=dict)
    document_ref: str | None = None
    external: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **meta: Any) -> LedgerEntry:
        return cls(
            **meta,
            number=str(data["number"]),
            value=int(data["value"]),
            period=str(data["period"]),
            date=datetime.date.fromisoformat(data["date"]),
            issued_at=_timestamp(data["issued_at"]),
            status=str(data["status"]),
            void_reason=None if data["void_reason"] is None else str(data["void_reason"]),
            voided_at=_maybe_timestamp(data["voided_at"]),
            variables=dict(data.get("variables", {})),
            document_ref=None if data.get("document_ref") is None else str(data["document_ref"]),
            external=bool(data.get("external", False)),
        )


@dataclass(frozen=True, slots=True)
class CounterChange(Answer):
    """A counter set by hand (go-live), as answered by ``PUT /series/{name}/counters/{period}``:
    its last value before (None: nothing taken yet) and now, and how many values a gapless
    counter recorded as voided on the way."""

    period: str
    variables: Mapping[str, str]
    previous: int | None
    last_value: int
    voided: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **meta: Any) -> CounterChange:
        return cls(
            **meta,
            period=str(data["period"]),
            variables=dict(data["variables"]),
            previous=None if data["previous"] is None else int(data["previous"]),
            last_value=int(data["last_value"]),
            voided=int(data["voided"]),
        )


@dataclass(frozen=True, slots=True)
class NextPreview(Answer):
    """The number the next request would get, as ``GET /series/{name}/next-preview`` shows it;
    nothing was taken (in cached mode: the first value no process holds)."""

    series: str
    number: str
    value: int
    period: str
    variables: Mapping[str, str]
    date: datetime.date
    mode: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **meta: Any) -> NextPreview:
        return cls(
            **meta,
            series=str(data["series"]),
            number=str(data["number"]),
            value=int(data["value"]),
            period=str(data["period"]),
            variables=dict(data["variables"]),
            date=datetime.date.fromisoformat(data["date"]),
            mode=str(data["mode"]),
        )


@dataclass(frozen=True, slots=True)
class FormatChange:
    """One format a series had: from ``effective_from`` (document date; None: from the start)."""

    format: str
    effective_from: datetime.date | None
    set_at: datetime.datetime


@dataclass(frozen=True, slots=True)
class Counter:
    """The last value issued by one counter: a period and its ``{var:…}`` values."""

    period: str
    variables: Mapping[str, str]
    last_value: int | None


@dataclass(frozen=True, slots=True)
class Series(Answer):
    """A series, as answered by creating, reading, changing, restoring or listing it.

    ``etag`` is the version of its definition: pass it as ``if_match`` to change the series only
    if nobody changed it since (None in listings, which carry no ETag). Like ``request_id`` it
    describes the answer, so it does not count in comparisons. ``counters`` is None in listings.
    """

    name: str
    format: str
    mode: str
    reset: str
    start: int
    step: int
    max_value: int | None
    timezone: str
    fiscal_year_start: int
    block_size: int
    ledger: bool
    description: str
    shared_counter: bool
    date_order: str
    closed_through: datetime.date | None
    number_profile: str | None
    max_length: int | None
    allowed_characters: str | None
    warn_remaining: int | None
    archived: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime
    formats: tuple[FormatChange, ...]
    counters: tuple[Counter, ...] | None
    etag: str | None = field(default=None, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **meta: Any) -> Series:
        counters = data.get("counters")
        return cls(
            **meta,
            name=str(data["name"]),
            format=str(data["format"]),
            mode=str(data["mode"]),
            reset=str(data["reset"]),
            start=int(data["start"]),
            step=int(data["step"]),
            max_value=None if data["max_value"] is None else int(data["max_value"]),
            timezone=str(data["timezone"]),
            fiscal_year_start=int(data["fiscal_year_start"]),
            block_size=int(data["block_size"]),
            ledger=bool(data["ledger"]),
            description=str(data["description"]),
            shared_counter=bool(data["shared_counter"]),
            date_order=str(data["date_order"]),
            closed_through=_maybe_date(data["closed_through"]),
            number_profile=_optional_text(data["number_profile"]),
            max_length=None if data["max_length"] is None else int(data["max_length"]),
            allowed_characters=_optional_text(data["allowed_characters"]),
            warn_remaining=None if data["warn_remaining"] is None else int(data["warn_remaining"]),
            archived=bool(data["archived"]),
            created_at=_timestamp(data["created_at"]),
            updated_at=_timestamp(data["updated_at"]),
            formats=tuple(
                FormatChange(
                    format=str(f["format"]),
                    effective_from=_maybe_date(f["effective_from"]),
                    set_at=_timestamp(f["set_at"]),
                )
                for f in data["formats"]
            ),
            counters=None
            if counters is None
            else tuple(
                Counter(
                    period=str(c["period"]),
                    variables=dict(c["variables"]),
                    last_value=None if c["last_value"] is None else int(c["last_value"]),
                )
                for c in counters
            ),
        )


@dataclass(frozen=True, slots=True)
class Gap:
    """Values ``first`` to ``last`` (``count`` of them) are missing from the ledger."""

    first: int
    last: int
    count: int


@dataclass(frozen=True, slots=True)
class GapReport(Answer):
    """The values missing from the ledger of one counter (a period and variable values).

    ``missing`` and ``runs`` count the whole period; ``gaps`` lists the first runs only when
    ``truncated`` is true.
    """

    period: str
    variables: Mapping[str, str]
    start: int
    last_value: int | None
    missing: int
    runs: int
    truncated: bool
    gaps: tuple[Gap, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **meta: Any) -> GapReport:
        return cls(
            **meta,
            period=str(data["period"]),
            variables=dict(data["variables"]),
            start=int(data["start"]),
            last_value=None if data["last_value"] is None else int(data["last_value"]),
            missing=int(data["missing"]),
            runs=int(data["runs"]),
            truncated=bool(data["truncated"]),
            gaps=tuple(
                Gap(first=int(g["first"]), last=int(g["last"]), count=int(g["count"]))
                for g in data["gaps"]
            ),
        )


@dataclass(frozen=True, slots=True)
class ApiKey(Answer):
    """An API key of the tenant, as listed or revoked: its prefix and metadata, never its secret."""

    prefix: str
    scope: str
    name: str
    created_at: datetime.datetime
    last_used_at: datetime.datetime | None
    revoked_at: datetime.datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **meta: Any) -> ApiKey:
        return cls(
            **meta,
            prefix=str(data["prefix"]),
            scope=str(data["scope"]),
            name=str(data["name"]),
            created_at=_timestamp(data["created_at"]),
            last_used_at=_maybe_timestamp(data["last_used_at"]),
            revoked_at=_maybe_timestamp(data["revoked_at"]),
        )


@dataclass(frozen=True, slots=True)
class NewKey(Answer):
    """A key just created: ``key`` is the secret, shown only in this answer (and its replays)."""

    key: str
    details: ApiKey

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **meta: Any) -> NewKey:
        return cls(**meta, key=str(data["key"]), details=ApiKey.from_json(data))


@dataclass(frozen=True, slots=True)
class AuditEntry(Answer):
    """One administrative change: who (``actor``) did what (``action``) to which series, when."""

    id: int
    at: datetime.datetime
    actor: str
    action: str
    series: str | None
    details: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **meta: Any) -> AuditEntry:
        return cls(
            **meta,
            id=int(data["id"]),
            at=_timestamp(data["at"]),
            actor=str(data["actor"]),
            action=str(data["action"]),
            series=None if data["series"] is None else str(data["series"]),
            details=dict(data["details"]),
        )


@dataclass(frozen=True, slots=True)
class Download(Answer):
    """A ledger written out as CSV: ``size`` bytes."""

    size: int
