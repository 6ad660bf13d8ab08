"""The service's ``application/problem+json`` errors, as exceptions to catch by kind.

Every error the client raises is a :class:`DocnumError`. A response whose ``type`` is known maps to
its own subclass (``/problems/series-not-found`` -> :class:`SeriesNotFound`); an unknown type falls
back to the class for its status (a new kind of 409 is still a :class:`Conflict`), so code written
today keeps catching what a newer service sends.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

__all__ = [
    "AlreadyVoided",
    "Conflict",
    "DocnumError",
    "Forbidden",
    "FormatConflict",
    "IdempotencyKeyInFlight",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "KeyNotFound",
    "LedgerDisabled",
    "MalformedRequest",
    "NotFound",
    "NotGapless",
    "NumberNotFound",
    "NumberReserved",
    "Overloaded",
    "PreconditionFailed",
    "PreconditionRequired",
    "ReservationConfirmed",
    "ReservationEnded",
    "ReservationExpired",
    "ReservationNotFound",
    "ReservationReleased",
    "SeriesArchived",
    "SeriesExhausted",
    "SeriesExists",
    "SeriesInUse",
    "SeriesNotFound",
    "ServiceUnreachable",
    "TooManyExports",
    "Unauthorized",
    "Unavailable",
]

BLANK = "about:blank"


class DocnumError(Exception):
    """An error answer of the service (RFC 9457 fields), or no answer at all.

    ``retryable`` says whether the same request, with the same Idempotency-Key, may succeed
    later; the clients retry those by themselves before raising. ``request_id`` is the
    service's ``X-Request-ID`` for the answer (quote it when reporting a problem), and
    ``replayed`` says whether the answer was the stored answer of an earlier request with the
    same Idempotency-Key.
    """

    problem_type: ClassVar[str] = BLANK
    default_status: ClassVar[int | None] = None
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        status: int | None,
        type: str,
        title: str,
        detail: str,
        *,
        instance: str | None = None,
        errors: Sequence[Mapping[str, Any]] = (),
        retry_after: float | None = None,
        request_id: str | None = None,
        replayed: bool = False,
    ) -> None:
        super().__init__(f"{status or 'no answer'} {title}: {detail}")
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.instance = instance
        self.errors = list(errors)
        self.retry_after = retry_after
        self.request_id = request_id
        self.replayed = replayed

    def __reduce__(self) -> tuple[Any, ...]:
        # Task queues pickle exceptions; the default would call __init__ with the message only.
        fields = (self.status, self.type, self.title, self.detail)
        return (type(self), fields, self.__dict__)


class ServiceUnreachable(DocnumError):
    """No answer arrived: the connection failed, broke or timed out (``status`` is None)."""

    retryable = True


class MalformedRequest(DocnumError):
    problem_type, default_status = "/problems/malformed-request", 400


class Unauthorized(DocnumError):
    """The API key is missing, malformed, unknown or revoked."""

    problem_type, default_status = "/problems/unauthorized", 401


class Forbidden(DocnumError):
    """The key is valid but lacks the scope (for example, an issue key on an admin route)."""

    problem_type, default_status = "/problems/forbidden", 403


class NotFound(DocnumError):
    problem_type, default_status = "/problems/not-found", 404


class SeriesNotFound(NotFound):
    problem_type = "/problems/series-not-found"


class NumberNotFound(NotFound):
    problem_type = "/problems/number-not-found"


class KeyNotFound(NotFound):
    problem_type = "/problems/key-not-found"


class ReservationNotFound(NotFound):
    """The series has no such reservation (another tenant's are not visible)."""

    problem_type = "/problems/reservation-not-found"


class Conflict(DocnumError):
    problem_type, default_status = "/problems/conflict", 409


class SeriesExists(Conflict):
    problem_type = "/problems/series-exists"


class SeriesInUse(Conflict):
    """The change would alter numbers already issued (their start, step or mode)."""

    problem_type = "/problems/series-in-use"


class FormatConflict(Conflict):
    """The new format could render a number the series already issued."""

    problem_type = "/problems/format-conflict"


class SeriesArchived(Conflict):
    problem_type = "/problems/series-archived"


class SeriesExhausted(Conflict):
    """The series reached its ``max_value``; no number was issued."""

    problem_type = "/problems/series-exhausted"


class DateOrder(Conflict):
    """The series keeps dates in order and the date is before its counter's last number's."""

    problem_type = "/problems/date-order"


class PeriodClosed(Conflict):
    """The document's date is in the series' closed period; no number was issued."""

    problem_type = "/problems/period-closed"


class AlreadyVoided(Conflict):
    problem_type = "/problems/already-voided"


class NumberReserved(Conflict):
    """The number is held by a reservation: release it instead of voiding the number."""

    problem_type = "/problems/number-reserved"


class NotGapless(Conflict):
    """Only numbers of a gapless series can be voided."""

    problem_type = "/problems/not-gapless"


class LedgerDisabled(Conflict):
    """The series keeps no ledger, so its numbers cannot be looked up."""

    problem_type = "/problems/ledger-disabled"


class ReservationEnded(Conflict):
    """The reservation no longer holds its numbers, so it cannot be confirmed."""


class ReservationReleased(ReservationEnded):
    problem_type = "/problems/reservation-released"


class ReservationExpired(ReservationEnded):
    """The reservation was not confirmed before its ``expires_at``."""

    problem_type = "/problems/reservation-expired"


class ReservationConfirmed(Conflict):
    """The reservation was confirmed, so it cannot be released: void its numbers instead."""

    problem_type = "/problems/reservation-confirmed"


class NumberExists(Conflict):
    """The number recorded from elsewhere, or its counter's value, is already in the ledger."""

    problem_type = "/problems/number-exists"


class NumberHeld(Conflict):
    """In cached mode, a value below the counter may still be handed out: not recordable."""

    problem_type = "/problems/number-held"


class CounterNotRaised(Conflict):
    """A counter only moves up; the value sent is at or below its last value."""

    problem_type = "/problems/counter-not-raised"


class IdempotencyKeyInFlight(Conflict):
    """Another request with this key has not finished; the same request may be sent again."""

    problem_type = "/problems/idempotency-key-in-flight"
    retryable = True


class PreconditionFailed(DocnumError):
    """``if_match`` named a version of the series that someone has changed since."""

    problem_type, default_status = "/problems/precondition-failed", 412


class PreconditionRequired(DocnumError):
    """The service requires ``if_match`` on changes to a series."""

    problem_type, default_status = "/problems/precondition-required", 428


class InvalidRequest(DocnumError):
    """The request breaks a rule; ``errors`` names the fields (``{"field", "message"}``)."""

    problem_type, default_status = "/problems/invalid-request", 422


class IdempotencyKeyReused(InvalidRequest):
    """The key was already used for a different request (another date, count or variables)."""

    problem_type = "/problems/idempotency-key-reused"


class NumberUnreadable(InvalidRequest):
    """The number does not read as one the series renders for the document's date."""

    problem_type = "/problems/number-unreadable"


class Unavailable(DocnumError):
    """The service or its database cannot answer now; ``retry_after`` says when to try again."""

    problem_type, default_status = "/problems/unavailable", 503
    retryable = True


class Overloaded(Unavailable):
    problem_type = "/problems/overloaded"


class TooManyExports(Unavailable):
    problem_type = "/problems/too-many-exports"


def _kinds(root: type[DocnumError]) -> list[type[DocnumError]]:
    found = []
    for sub in root.__subclasses__():
        found.extend([sub, *_kinds(sub)])
    return found


# Only what a class declares itself counts: SeriesNotFound must not claim every 404.
_BY_TYPE = {k.problem_type: k for k in _kinds(DocnumError) if "problem_type" in vars(k)}
_BY_STATUS = {k.default_status: k for k in _kinds(DocnumError) if "default_status" in vars(k)}
# A gateway in front of the service that cannot reach it answers these; retrying is as safe.
_BY_STATUS.update({502: Unavailable, 504: Unavailable})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def answer_meta(response: httpx.Response) -> dict[str, Any]:
    """What every answer tells besides its body: the service's request id, and whether it is the
    replay of an earlier request with the same Idempotency-Key."""
    return {
        "request_id": response.headers.get("X-Request-ID"),
        "replayed": response.headers.get("Idempotent-Replayed", "").lower() == "true",
    }


def from_response(response: httpx.Response) -> DocnumError:
    """The exception for an error response, problem+json or not (a gateway's HTML page)."""
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    meta = answer_meta(response)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        kind = _BY_STATUS.get(response.status_code, DocnumError)
        text = response.text.strip()[:200] or response.reason_phrase
        title = response.reason_phrase
        return kind(response.status_code, BLANK, title, text, retry_after=retry_after, **meta)
    problem_type = str(body.get("type", BLANK))
    kind = _BY_TYPE.get(problem_type) or _BY_STATUS.get(response.status_code, DocnumError)
    errors = body.get("errors")
    return kind(
        response.status_code,
        problem_type,
        str(body.get("title", response.reason_phrase)),
        str(body.get("detail", "")),
        instance=body.get("instance"),
        errors=errors if isinstance(errors, list) else (),
        retry_after=retry_after,
        **meta,
    )


def unreachable(error: httpx.TransportError) -> ServiceUnreachable:
    detail = f"{type(error).__name__}: {error}"
    return ServiceUnreachable(None, BLANK, "Service unreachable", detail)
