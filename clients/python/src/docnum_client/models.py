"""What the service answers about numbers, as immutable typed values."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class IssuedNumber:
    """One number, as answered by ``POST /series/{name}/next``."""

    series: str
    number: str
    value: int
    period: str
    date: datetime.date
    issued_at: datetime.datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IssuedNumber:
        return cls(
            series=str(data["series"]),
            number=str(data["number"]),
            value=int(data["value"]),
            period=str(data["period"]),
            date=datetime.date.fromisoformat(data["date"]),
            issued_at=datetime.datetime.fromisoformat(data["issued_at"]),
        )


@dataclass(frozen=True, slots=True)
class IssuedBatch:
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
    def from_json(cls, data: Mapping[str, Any]) -> IssuedBatch:
        return cls(
            series=str(data["series"]),
            period=str(data["period"]),
            date=datetime.date.fromisoformat(data["date"]),
            issued_at=datetime.datetime.fromisoformat(data["issued_at"]),
            count=int(data["count"]),
            numbers=tuple(str(n) for n in data["numbers"]),
            values=tuple(int(v) for v in data["values"]),
        )


def _timestamp(text: str) -> datetime.datetime:
    """An ISO 8601 timestamp; the ledger writes UTC as ``Z``, which Python 3.10 cannot parse."""
    return datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One number as the ledger records it, as answered by ``GET /series/{name}/numbers/{number}``
    and by voiding it. ``void_reason`` and ``voided_at`` are set once it is voided."""

    number: str
    value: int
    period: str
    date: datetime.date
    issued_at: datetime.datetime
    status: str
    void_reason: str | None
    voided_at: datetime.datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerEntry:
        voided_at = data["voided_at"]
        return cls(
            number=str(data["number"]),
            value=int(data["value"]),
            period=str(data["period"]),
            date=datetime.date.fromisoformat(data["date"]),
            issued_at=_timestamp(data["issued_at"]),
            status=str(data["status"]),
            void_reason=None if data["void_reason"] is None else str(data["void_reason"]),
            voided_at=None if voided_at is None else _timestamp(voided_at),
        )
