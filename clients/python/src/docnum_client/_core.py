"""What the sync and async clients share: building calls, reading answers, deciding on retries.

Nothing here does I/O, so both clients run the same code and differ only in how they send a
request, how they sleep and how they iterate.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

import httpx

from docnum_client.errors import BLANK, DocnumError, answer_meta, from_response
from docnum_client.models import (
    ApiKey,
    AuditEntry,
    CounterChange,
    GapReport,
    IssuedBatch,
    IssuedNumber,
    LedgerEntry,
    NewKey,
    NextPreview,
    Reservation,
    Series,
)

__version__ = "0.2.0"

T = TypeVar("T")
A = TypeVar("A", covariant=True)

log = logging.getLogger("docnum_client")

URL_VARIABLE = "DOCNUM_URL"
KEY_VARIABLE = "DOCNUM_API_KEY"

# Failures after which the request may or may not have reached the service. Retrying them is safe
# only because every attempt of a call that changes something carries the same Idempotency-Key.
RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the service is and how to authenticate: the arguments, else ``DOCNUM_URL`` and
    ``DOCNUM_API_KEY`` from the environment."""

    base_url: str
    headers: Mapping[str, str]

    @classmethod
    def resolve(cls, base_url: str | None, api_key: str | None) -> Connection:
        base_url = base_url or os.environ.get(URL_VARIABLE)
        api_key = api_key or os.environ.get(KEY_VARIABLE)
        if not base_url:
            raise ValueError(f"Pass base_url or set {URL_VARIABLE}.")
        if not api_key:
            raise ValueError(f"Pass api_key or set {KEY_VARIABLE}.")
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json, application/problem+json",
            "User-Agent": f"docnum-client/{__version__}",
        }
        return cls(base_url.rstrip("/"), headers)


class Parsed(Protocol[A]):
    def __call__(self, data: Mapping[str, Any], **meta: Any) -> A: ...


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; ``next_cursor`` is None on the last one."""

    items: tuple[T, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One logical call; every attempt sends the same request with the same Idempotency-Key
    (calls that change something carry one; reading needs none).

    A ``stream`` call's answer is the open response itself, its body not read yet.
    """

    method: str
    path: str
    body: dict[str, Any] | None
    idempotency_key: str | None
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] = field(default_factory=dict)
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    stream: bool = False

    def headers(self, connection: Connection) -> dict[str, str]:
        headers = {**connection.headers, **self.extra_headers}
        if self.idempotency_key is not None:
            headers["Idempotency-Key"] = self.idempotency_key
        return headers

    def request(
        self, http: httpx.Client | httpx.AsyncClient, connection: Connection
    ) -> httpx.Request:
        return http.build_request(
            self.method,
            connection.base_url + self.path,
            json=self.body,
            params=self.params,
            headers=self.headers(connection),
        )

    def answer(self, response: httpx.Response) -> T:
        """The result of a success; raises the matching :class:`DocnumError` otherwise."""
        if not response.is_success:
            raise from_response(response)
        try:
            return self.parse(response)
        except (ValueError, KeyError, TypeError) as error:
            raise DocnumError(
                response.status_code,
                BLANK,
                "Unexpected answer",
                f"The service answered {response.status_code} with a body this client cannot "
                f"read ({type(error).__name__}: {error}).",
                **answer_meta(response),
            ) from error


def _one(parse: Parsed[T]) -> Callable[[httpx.Response], T]:
    def read(response: httpx.Response) -> T:
        return parse(response.json(), **answer_meta(response))

    return read


def _series(response: httpx.Response) -> Series:
    return Series.from_json(
        response.json(), etag=response.headers.get("ETag"), **answer_meta(response)
    )


def _page(parse: Parsed[T]) -> Callable[[httpx.Response], Page[T]]:
    """Each item carries the request id of the page it came in."""

    def read(response: httpx.Response) -> Page[T]:
        data = response.json()
        meta = answer_meta(response)
        cursor = data["next_cursor"] if data["has_more"] else None
        return Page(tuple(parse(item, **meta) for item in data["items"]), cursor)

    return read


def _nothing(response: httpx.Response) -> None:
    return None


def _itself(response: httpx.Response) -> httpx.Response:
    return response


def _key(idempotency_key: str | None) -> str:
    return idempotency_key or str(uuid.uuid4())


def _query(**values: object) -> dict[str, str]:
    """Query parameters, without the ones not given; booleans as the service reads them."""
    return {
        name: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for name, value in values.items()
        if value is not None
    }


def _path(series: str, action: str = "") -> str:
    return f"/series/{quote(series, safe='')}" + (f"/{action}" if action else "")


def _number_path(series: str, number: str) -> str:
    """Every character that is not unreserved is percent-encoded, ``/`` included: a number such
    as ``INV/2026/0001`` or ``Q?1`` stays one path parameter."""
    return _path(series, f"numbers/{quote(number, safe='')}")


def _body(
    date: datetime.date | None,
    variables: Mapping[str, str] | None,
    document_ref: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if date is not None:
        body["date"] = date.isoformat()
    if variables:
        body["variables"] = dict(variables)
    if document_ref is not None:
        body["document_ref"] = document_ref
    return body


def _fields(changes: Mapping[str, object]) -> dict[str, Any]:
    """A series' fields as JSON: dates as ISO 8601."""
    return {
        name: value.isoformat() if isinstance(value, datetime.date) else value
        for name, value in changes.items()
    }


# --- numbers


def next_call(
    series: str,
    date: datetime.date | None,
    variables: Mapping[str, str] | None,
    idempotency_key: str | None,
    document_ref: str | None = None,
) -> Call[IssuedNumber]:
    return Call(
        "POST",
        _path(series, "next"),
        _body(date, variables, document_ref),
        _key(idempotency_key),
        _one(IssuedNumber.from_json),
    )


def batch_call(
    series: str,
    count: int,
    date: datetime.date | None,
    variables: Mapping[str, str] | None,
    idempotency_key: str | None,
    document_ref: str | None = None,
) -> Call[IssuedBatch]:
    return Call(
        "POST",
        _path(series, "batch"),
        {"count": count, **_body(date, variables, document_ref)},
        _key(idempotency_key),
        _one(IssuedBatch.from_json),
    )


def annotate_call(series: str, number: str, document_ref: str) -> Call[LedgerEntry]:
    """Setting a reference twice to the same value changes nothing: no key needed."""
    body = {"document_ref": document_ref}
    return Call("PATCH", _number_path(series, number), body, None, _one(LedgerEntry.from_json))


def set_counter_call(
    series: str,
    period: str,
    last_value: int,
    reason: str,
    variables: Mapping[str, str] | None,
    date: datetime.date | None,
    idempotency_key: str | None,
) -> Call[CounterChange]:
    body = {"last_value": last_value, "reason": reason, **_body(date, variables)}
    path = _path(series, f"counters/{quote(period, safe='')}")
    return Call("PUT", path, body, _key(idempotency_key), _one(CounterChange.from_json))


def record_call(
    series: str,
    number: str,
    date: datetime.date,
    document_ref: str | None,
    idempotency_key: str | None,
) -> Call[LedgerEntry]:
    body = {"number": number, **_body(date, None, document_ref)}
    path = _path(series, "numbers")
    return Call("POST", path, body, _key(idempotency_key), _one(LedgerEntry.from_json))


def preview_call(
    series: str, date: datetime.date | None, variables: Mapping[str, str] | None
) -> Call[NextPreview]:
    encoded = ",".join(f"{k}={v}" for k, v in sorted((variables or {}).items())) or None
    params = _query(date=date.isoformat() if date else None, variables=encoded)
    path = _path(series, "next-preview")
    return Call("GET", path, None, None, _one(NextPreview.from_json), params)


def number_call(series: str, number: str) -> Call[LedgerEntry]:
    return Call("GET", _number_path(series, number), None, None, _one(LedgerEntry.from_json))


def void_call(
    series: str, number: str, reason: str, idempotency_key: str | None
) -> Call[LedgerEntry]:
    path = f"{_number_path(series, number)}/void"
    return Call(
        "POST", path, {"reason": reason}, _key(idempotency_key), _one(LedgerEntry.from_json)
    )


def _reservation_path(series: str, reservation_id: str, action: str = "") -> str:
    path = _path(series, f"reservations/{quote(reservation_id, safe='')}")
    return path + (f"/{action}" if action else "")


def reserve_call(
    series: str,
    count: int,
    date: datetime.date | None,
    variables: Mapping[str, str] | None,
    document_ref: str | None,
    ttl_seconds: int | None,
    idempotency_key: str | None,
) -> Call[Reservation]:
    body = {
        "count": count,
        **_body(date, variables),
        **({"document_ref": document_ref} if document_ref is not None else {}),
        **({"ttl_seconds": ttl_seconds} if ttl_seconds is not None else {}),
    }
    return Call(
        "POST",
        _path(series, "reservations"),
        body,
        _key(idempotency_key),
        _one(Reservation.from_json),
    )


def confirm_call(series: str, reservation_id: str, document_ref: str | None) -> Call[Reservation]:
    """Confirming is idempotent by itself: a retry answers the same, without a key."""
    body = {} if document_ref is None else {"document_ref": document_ref}
    path = _reservation_path(series, reservation_id, "confirm")
    return Call("POST", path, body, None, _one(Reservation.from_json))


def release_call(series: str, reservation_id: str) -> Call[Reservation]:
    """Releasing is idempotent by itself: a retry answers the same, without a key."""
    path = _reservation_path(series, reservation_id)
    return Call("DELETE", path, None, None, _one(Reservation.from_json))


def reservation_call(series: str, reservation_id: str) -> Call[Reservation]:
    path = _reservation_path(series, reservation_id)
    return Call("GET", path, None, None, _one(Reservation.from_json))


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    """Which entries of a ledger: a period, a counter's variable values (``branch=BR07``; empty
    for the counter without variables), a status (``issued`` or ``voided``), a document
    reference."""

    period: str | None = None
    variables: str | None = None
    status: str | None = None
    document_ref: str | None = None

    def params(self, **more: object) -> dict[str, str]:
        return _query(
            period=self.period,
            variables=self.variables,
            status=self.status,
            document_ref=self.document_ref,
            **more,
        )


def ledger_call(
    series: str, where: LedgerFilter, page_size: int
) -> Callable[[str | None], Call[Page[LedgerEntry]]]:
    def page(cursor: str | None) -> Call[Page[LedgerEntry]]:
        params = where.params(format="json", limit=page_size, cursor=cursor)
        return Call(
            "GET", _path(series, "numbers"), None, None, _page(LedgerEntry.from_json), params
        )

    return page


def csv_call(series: str, where: LedgerFilter) -> Call[httpx.Response]:
    """The whole ledger (with the filters) as one CSV, streamed."""
    params = where.params(format="csv")
    return Call("GET", _path(series, "numbers"), None, None, _itself, params, stream=True)


def gaps_call(series: str, period: str | None, variables: str | None) -> Call[GapReport]:
    params = _query(period=period, variables=variables)
    return Call("GET", _path(series, "gaps"), None, None, _one(GapReport.from_json), params)


# --- series


def create_series_call(
    name: str, format: str, fields: Mapping[str, object], idempotency_key: str | None
) -> Call[Series]:
    body = {"name": name, "format": format, **_fields(fields)}
    return Call("POST", "/series", body, _key(idempotency_key), _series)


def list_series_call(archived: bool, page_size: int) -> Callable[[str | None], Call[Page[Series]]]:
    def page(cursor: str | None) -> Call[Page[Series]]:
        params = _query(archived=archived, limit=page_size, cursor=cursor)
        return Call("GET", "/series", None, None, _page(Series.from_json), params)

    return page


def get_series_call(name: str) -> Call[Series]:
    return Call("GET", _path(name), None, None, _series)


def update_series_call(
    name: str, changes: Mapping[str, object], if_match: str | None
) -> Call[Series]:
    """A change is sent once: a ``PATCH`` carries no Idempotency-Key, and ``if_match`` guards
    it against changes made in between (a retry after a lost answer gets 412)."""
    headers = {} if if_match is None else {"If-Match": if_match}
    return Call("PATCH", _path(name), _fields(changes), None, _series, extra_headers=headers)


def archive_series_call(name: str) -> Call[None]:
    return Call("DELETE", _path(name), None, None, _nothing)


def restore_series_call(name: str) -> Call[Series]:
    return Call("POST", _path(name, "restore"), None, None, _series)


# --- keys and audit


def list_keys_call(revoked: bool, page_size: int) -> Callable[[str | None], Call[Page[ApiKey]]]:
    def page(cursor: str | None) -> Call[Page[ApiKey]]:
        params = _query(revoked=revoked, limit=page_size, cursor=cursor)
        return Call("GET", "/keys", None, None, _page(ApiKey.from_json), params)

    return page


def create_key_call(scope: str, name: str, idempotency_key: str | None) -> Call[NewKey]:
    body = {"scope": scope, "name": name}
    return Call("POST", "/keys", body, _key(idempotency_key), _one(NewKey.from_json))


def revoke_key_call(prefix: str) -> Call[ApiKey]:
    return Call("DELETE", f"/keys/{quote(prefix, safe='')}", None, None, _one(ApiKey.from_json))


def audit_call(
    action: str | None, series: str | None, page_size: int
) -> Callable[[str | None], Call[Page[AuditEntry]]]:
    def page(cursor: str | None) -> Call[Page[AuditEntry]]:
        params = _query(action=action, series=series, limit=page_size, cursor=cursor)
        return Call("GET", "/audit", None, None, _page(AuditEntry.from_json), params)

    return page


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


def retry_delay(
    policy: RetryPolicy, call: Call[Any], error: DocnumError, attempt: int
) -> float | None:
    """The policy's delay, with the retry logged on the ``docnum_client`` logger."""
    delay = policy.delay(error, attempt)
    if delay is not None:
        log.warning(
            "retrying %s %s in %.2fs after attempt %d of %d: %s (request id %s)",
            call.method,
            call.path,
            delay,
            attempt,
            policy.max_attempts,
            error,
            error.request_id,
        )
    return delay
