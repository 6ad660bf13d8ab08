"""What the service answers when it issues numbers, as immutable typed values."""

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
