"""The typed problems every error a client can see is, with the pure helpers that build them.

Every error a client can see is a subclass of :class:`Problem`. Its ``slug`` is the stable part of
the ``type`` URI (``/problems/<slug>``) that clients may switch on; ``detail`` is for humans;
``description`` is what its page at ``/problems/<slug>`` says.

This module imports no web framework (and no database driver): the issuing, series and ledger
code raises these problems without depending on how they are answered. Turning them, and every
other exception, into HTTP answers is ``app.http_errors``' job, at the edge beside ``app.deps``;
a test imports this module alone and checks that no web framework was loaded with it.
"""

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

RETRY_AFTER: Mapping[str, str] = {"Retry-After": "Seconds to wait before retrying."}


class Problem(Exception):
    """An error with an HTTP status and a stable problem type."""

    status: int = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    # What the problem means and what to do about it, for its page at /problems/<slug>.
    description: ClassVar[str] = (
        "The service failed in a way it did not expect; nothing in the request is known to be "
        "wrong. Retry once; if it happens again, report the response's `X-Request-ID` to the "
        "operators."
    )
    # Headers every instance sends, by name, with what they mean (for the OpenAPI document).
    documented_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status or type(self).status
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})


class BadRequest(Problem):
    status, slug, title = 400, "malformed-request", "Malformed request"
    description = (
        "The request could not be read: the body is not valid JSON, or a header is "
        "malformed. Fix the request before sending it again."
    )


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"
    description = (
        "No API key was sent, or the key is unknown, malformed or revoked. Send "
        "`Authorization: Bearer <key>` with a valid key of your tenant."
    )
    documented_headers: ClassVar[Mapping[str, str]] = {
        "WWW-Authenticate": "The scheme to authenticate with: Bearer."
    }

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="docnum"'})


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Not allowed"
    description = (
        "The key is valid but its scope does not allow this operation (an `issue` key on "
        "an administrative route). Use an `admin` key of the tenant."
    )


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"
    description = (
        "Nothing is served at this path. Check the path against the API description at `/docs`."
    )


class SeriesNotFound(NotFound):
    slug, title = "series-not-found", "Series not found"
    description = (
        "The tenant has no series of this name (another tenant's series are not visible)."
        " Check the name, or create the series."
    )


class NumberNotFound(NotFound):
    slug, title = "number-not-found", "Number not found"
    description = (
        "The series' ledger holds no such number. Check the number, percent-encoded in "
        "the path, and the series."
    )


class ReservationNotFound(NotFound):
    slug, title = "reservation-not-found", "Reservation not found"
    description = (
        "The series has no reservation with this id (another tenant's reservations are not "
        "visible, and settled reservations are kept only for a while). Check the id and the "
        "series; reserve again if it is gone."
    )


class KeyNotFound(NotFound):
    slug, title = "key-not-found", "Key not found"
    description = "The tenant has no API key with this prefix. List the keys to find the prefix."


class TenantNotFound(NotFound):
    slug, title = "tenant-not-found", "Tenant not found"
    description = "No tenant has this name. Check the name, or create the tenant with a key."


class MethodNotAllowed(Problem):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"
    description = (
        "The path exists but not with this method. The `Allow` header lists the methods it serves."
    )


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"
    description = (
        "The request conflicts with the current state of the resource. Read the resource "
        "again and decide."
    )


class SeriesExists(Conflict):
    slug, title = "series-exists", "Series already exists"
    description = (
        "A series of this name already exists in the tenant. Pick another name, or use "
        "the existing series."
    )


class SeriesArchived(Conflict):
    slug, title = "series-archived", "Series is archived"
    description = (
        "The series is archived and issues no numbers; what it issued stays readable. "
        "Restore it (`POST /series/{name}/restore`) or use another series."
    )


class SeriesInUse(Conflict):
    slug, title = "series-in-use", "Numbers were already issued"
    description = (
        "Mode, reset, start, step, fiscal year start and shared counter cannot change "
        "once a number was issued. Create a new series for the new numbering."
    )


class FormatConflict(Conflict):
    slug, title = "format-conflict", "The format could render an earlier number"
    description = (
        "The new format could render a number that an earlier format of the series can "
        "render, so one number could be issued twice. Add a literal prefix or separator "
        "no earlier format has, or start a new series."
    )


class SeriesExhausted(Conflict):
    slug, title = "series-exhausted", "Series is exhausted"
    description = (
        "The counter reached the series' `max_value`; a series never wraps. Raise "
        "`max_value`, or start a new series."
    )


class TooManyCounters(Conflict):
    slug, title = "too-many-counters", "The series has as many counters as it may have"
    description = (
        "A number would need a new counter (a new period, or new values of the variables the "
        "number shows), and the series has as many as the service allows "
        "(`DOCNUM_MAX_COUNTERS_PER_SERIES`). Numbers of its existing counters are still issued; "
        "ask the operator to raise the limit, or share one counter across variable values."
    )


class NumberCollision(Conflict):
    slug, title = "number-collision", "Number already in the ledger"
    description = (
        "The number rendered for this request is already in the ledger (variables that "
        "render alike, or a changed format); nothing was issued. Send other variables, or"
        " change the format."
    )


class DateOrder(Conflict):
    slug, title = "date-order", "Earlier than the counter's last date"
    description = (
        "The series keeps document dates in order (`date_order: strict`): a number is never "
        "dated before the last number of its counter, and the detail names that date. Nothing "
        "was issued. Send a date on or after it, or number the document in another series."
    )

    def __init__(self, detail: str, *, last_date: datetime.date) -> None:
        super().__init__(detail)
        self.last_date = last_date


class PeriodClosed(Conflict):
    slug, title = "period-closed", "The period is closed"
    description = (
        "The series is closed through a date (`closed_through`) and the document's date is on "
        "or before it: nothing is issued into a closed period. Send a later date, or have an "
        "administrator reopen the period with a reason."
    )


class AlreadyVoided(Conflict):
    slug, title = "already-voided", "Number is already voided"
    description = (
        "The number was voided before; it stays voided with its first reason. Nothing to do."
    )


class NumberReserved(Conflict):
    slug, title = "number-reserved", "Number is reserved"
    description = (
        "The number is held by a reservation that was neither confirmed nor released. Release "
        "the reservation (it is handed out again, or voided as released), or confirm it and "
        "void the number then."
    )


class NotGapless(Conflict):
    slug, title = "not-gapless", "Only gapless numbers can be voided"
    description = (
        "Only numbers of a gapless series can be voided; the other modes may skip values "
        "anyway. Nothing to void."
    )


class LedgerDisabled(Conflict):
    slug, title = "ledger-disabled", "This series keeps no ledger"
    description = (
        "The series records no ledger, so there is nothing to list, look up or check for "
        "gaps. Turn `ledger` on for numbers issued from now on."
    )


class ReservationReleased(Conflict):
    slug, title = "reservation-released", "The reservation was released"
    description = (
        "The reservation was released, so its numbers are no longer held and cannot be "
        "confirmed: they were handed out again or voided. Reserve new numbers."
    )


class ReservationExpired(Conflict):
    slug, title = "reservation-expired", "The reservation expired"
    description = (
        "The reservation was not confirmed before its `expires_at`, so its numbers are no "
        "longer held and cannot be confirmed: they were handed out again or voided. Reserve "
        "new numbers, with a longer `ttl_seconds` if the document takes that long."
    )


class ReservationConfirmed(Conflict):
    slug, title = "reservation-confirmed", "The reservation was confirmed"
    description = (
        "The reservation was confirmed, so its numbers are issued and can no longer be "
        "released. To cancel a document that has one, void its number."
    )


class NumberExists(Conflict):
    slug, title = "number-exists", "The number is already in the ledger"
    description = (
        "A number recorded from elsewhere is already in the ledger, or its counter's value is "
        "(issued, voided, or recorded before). Nothing was recorded; look the number up."
    )


class NumberHeld(Conflict):
    slug, title = "number-held", "The series may still hand this value out"
    description = (
        "In cached mode, values below the counter's top may be held in a process's block and "
        "handed out later, so a number with such a value cannot be recorded from elsewhere. "
        "Numbers above the counter can be."
    )


class CounterNotRaised(Conflict):
    slug, title = "counter-not-raised", "A counter only moves up"
    description = (
        "The value sent is at or below the counter's last value. A counter is never moved down "
        "(numbers already handed out would be handed out again); read the series' counters and "
        "send a higher value, or none."
    )


class NotChained(Conflict):
    slug, title = "not-chained", "This series keeps no hash chain"
    description = (
        "Only gapless series chain their ledger events with SHA-256; sequence and cached series "
        "record numbers from concurrent requests in no single order, so there is no chain to "
        "verify or to hand to an auditor. Use a gapless series for numbers that need one."
    )


class IdempotencyKeyInFlight(Conflict):
    slug, title = "idempotency-key-in-flight", "A request with this Idempotency-Key is in progress"
    description = (
        "A request with the same `Idempotency-Key` is still being served. Retry after "
        "`Retry-After` seconds to get its answer."
    )
    documented_headers: ClassVar[Mapping[str, str]] = RETRY_AFTER


class PreconditionFailed(Problem):
    status, slug, title = 412, "precondition-failed", "The resource changed since it was read"
    description = (
        "The `If-Match` header names a version (`ETag`) the resource no longer has: someone "
        "changed it since you read it, and nothing was changed now. Read it again (`GET`), "
        "decide on the change with what it now is, and send it with the new `ETag`."
    )


class PreconditionRequired(Problem):
    status, slug, title = 428, "precondition-required", "If-Match is required"
    description = (
        "The service requires changes to name the version they were made from "
        "(`DOCNUM_REQUIRE_IF_MATCH`), so that two people changing one resource cannot silently "
        "overwrite each other. Read the resource, and send its `ETag` as `If-Match`."
    )


class RateLimited(Problem):
    status, slug, title = 429, "rate-limited", "Too many requests for this key or tenant"
    description = (
        "The key, or its tenant's keys together, made as many requests as the service allows "
        "in the window (`DOCNUM_KEY_RATE_LIMIT`, `DOCNUM_TENANT_RATE_LIMIT`); nothing was done. "
        "Retry after `Retry-After` seconds. `RateLimit-Policy` names the quotas and `RateLimit` "
        "the one that ran out (draft-ietf-httpapi-ratelimit-headers); every answer to a key "
        "carries them, so a client can slow down before it is refused."
    )
    documented_headers: ClassVar[Mapping[str, str]] = {
        **RETRY_AFTER,
        "RateLimit-Policy": 'The quotas: `"key";q=600;w=60, "tenant";q=6000;w=60` (requests `q` '
        "per `w` seconds, per key and per tenant).",
        "RateLimit": 'The quota that ran out: `"key";r=0;t=12` (`r` requests left, `t` seconds '
        "until one is free again).",
    }


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Request body too large"
    description = (
        "The request body is larger than the service accepts (`DOCNUM_MAX_BODY_BYTES`). "
        "Send a smaller body, for instance a smaller batch."
    )


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"
    description = (
        "The body is not sent as `application/json`. Send JSON with `Content-Type: "
        "application/json`."
    )


class InvalidRequest(Problem):
    status, slug, title = 422, "invalid-request", "Invalid request"
    description = (
        "A field, parameter or header is invalid; `errors` names each one with the "
        "reason. Fix them before sending the request again."
    )


class NumberRuleBroken(InvalidRequest):
    slug, title = "number-rule", "The number breaks the series' number rules"
    description = (
        "The number rendered for this request would break a rule of its series (`max_length`, "
        "`allowed_characters` or `number_profile`), usually because of a variable's value; "
        "nothing was issued. Send shorter variables, or ones made of allowed characters."
    )


class NumberUnreadable(InvalidRequest):
    slug, title = "number-unreadable", "Not a number of this series"
    description = (
        "The number does not read as one the series renders for the document's date, with "
        "any format it had, and a value its counter counts. Check the number, the date and "
        "the series."
    )


class IdempotencyKeyReused(InvalidRequest):
    slug, title = "idempotency-key-reused", "Idempotency-Key reused with a different request"
    description = (
        "The `Idempotency-Key` was used before for a different request (another body, "
        "route or number). Use a new key for a new request; reuse a key only to retry the"
        " same request."
    )


class Unavailable(Problem):
    """The database cannot answer now (down, restarting, or a lock held too long); retry later."""

    status, slug, title = 503, "unavailable", "Service temporarily unavailable"
    description = (
        "The database cannot answer now (down, restarting, or a lock held too long); "
        "nothing was changed by this request. Retry after `Retry-After` seconds."
    )
    documented_headers: ClassVar[Mapping[str, str]] = RETRY_AFTER

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class Overloaded(Unavailable):
    slug, title = "overloaded", "Too many requests in progress"
    description = (
        "The process is serving as many requests as it allows at once. Retry after "
        "`Retry-After` seconds, or spread the load."
    )


class TooManyExports(Unavailable):
    slug, title = "too-many-exports", "Too many ledger exports in progress"
    description = (
        "The process is streaming as many CSV exports as it allows at once. Retry after "
        "`Retry-After` seconds."
    )


def problem_types() -> list[type[Problem]]:
    """Every problem class, ``Problem`` first and then each subclass after its parent."""
    found: list[type[Problem]] = []
    pending: list[type[Problem]] = [Problem]
    while pending:
        kind = pending.pop(0)
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


def field_error(field: str, message: str) -> InvalidRequest:
    """A 422 naming one field, in the same shape as request-validation errors."""
    return InvalidRequest(f"{field}: {message}", errors=[{"field": field, "message": message}])


def invalid_fields(errors: Sequence[Mapping[str, Any]]) -> InvalidRequest:
    """A 422 naming every field pydantic refused, by its path without the ``body`` prefix."""
    fields = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        fields.append({"field": ".".join(location) or "body", "message": str(error.get("msg"))})
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in fields)
    return InvalidRequest(summary or "The request is invalid.", errors=fields)
