"""What the sync and async clients share: building calls, reading answers, deciding on retries.

Nothing here does I/O, so both clients run the same code and differ only in how they send a
request and how they sleep.
"""

from __future__ import annotations

import datetime
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from docnum_client.errors import BLANK, DocnumError, from_response
from docnum_client.models import IssuedBatch, IssuedNumber, LedgerEntry

__version__ = "0.1.0"

T = TypeVar("T")

# Failures after which the request may or may not have reached the service. Retrying them is safe
# only because every attempt of a call carries the same Idempotency-Key.
RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def http_options(base_url: str, api_key: str, timeout: float) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client`` and ``httpx.AsyncClient`` alike."""
    return {
        "base_url": base_url,
        "timeout": timeout,
        "headers": {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json, application/problem+json",
            "User-Agent": f"docnum-client/{__version__}",
        },
    }


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One logical call; every attempt sends the same body with the same Idempotency-Key (calls
    that issue numbers carry one; reading and voiding need none)."""

    method: str
    path: str
    body: dict[str, Any] | None
    idempotency_key: str | None
    parse: Callable[[Mapping[str, Any]], T]

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.idempotency_key is None else {"Idempotency-Key": self.idempotency_key}

    def answer(self, response: httpx.Response) -> T:
        """The result of a success; raises the matching :class:`DocnumError` otherwise."""
        if not response.is_success:
            raise from_response(response)
        try:
            return self.parse(response.json())
        except (ValueError, KeyError, TypeError) as error:
            raise DocnumError(
                response.status_code,
                BLANK,
                "Unexpected answer",
                f"The service answered {response.status_code} with a body this client cannot "
                f"read ({type(error).__name__}: {error}).",
            ) from error


def _path(series: str, action: str) -> str:
    return f"/series/{quote(series, safe='')}/{action}"


def _number_path(series: str, number: str) -> str:
    """Every character that is not unreserved is percent-encoded, ``/`` included: a number such
    as ``INV/2026/0001`` or ``Q?1`` stays one path parameter."""
    return _path(series, f"numbers/{quote(number, safe='')}")


def _body(date: datetime.date | None, variables: Mapping[str, str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if date is not None:
        body["date"] = date.isoformat()
    if variables:
        body["variables"] = dict(variables)
    return body


def next_call(
    series: str,
    date: datetime.date | None,
    variables: Mapping[str, str] | None,
    idempotency_key: str | None,
) -> Call[IssuedNumber]:
    return Call(
        "POST",
        _path(series, "next"),
        _body(date, variables),
        idempotency_key or str(uuid.uuid4()),
        IssuedNumber.from_json,
    )


def batch_call(
    series: str,
    count: int,
    date: datetime.date | None,
    variables: Mapping[str, str] | None,
    idempotency_key: str | None,
) -> Call[IssuedBatch]:
    return Call(
        "POST",
        _path(series, "batch"),
        {"count": count, **_body(date, variables)},
        idempotency_key or str(uuid.uuid4()),
        IssuedBatch.from_json,
    )


def number_call(series: str, number: str) -> Call[LedgerEntry]:
    return Call("GET", _number_path(series, number), None, None, LedgerEntry.from_json)


def void_call(series: str, number: str, reason: str) -> Call[LedgerEntry]:
    path = f"{_number_path(series, number)}/void"
    return Call("POST", path, {"reason": reason}, None, LedgerEntry.from_json)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter.

    The wait doubles with each attempt, half of it fixed and half random: the random half spreads
    the retries of many clients that failed together (a restarting replica) so they do not come
    back in one wave. A ``Retry-After`` from the service is obeyed, plus a little jitter; one
    longer than ``max_delay`` ends the retries, since waiting less would disobey it and waiting
    more would hang the caller.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay(self, error: DocnumError, attempt: int) -> float | None:
        """Seconds to wait after failed attempt number ``attempt`` (from 1), or None to give up."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        # Jitter needs no cryptographic randomness.
        if error.retry_after is not None:
            if error.retry_after > self.max_delay:
                return None
            return error.retry_after + random.uniform(0, self.base_delay)  # noqa: S311
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311
