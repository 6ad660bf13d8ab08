"""The clients: :class:`DocnumClient` for plain code, :class:`AsyncDocnumClient` for asyncio.

Both give every call that changes something an ``Idempotency-Key`` (a fresh UUID unless you pass
your own) and send it again on each retry, so a retry after a lost answer gets the first answer
back instead of a second number, void, series or key. They retry by themselves when no answer
arrived, on 503 (after ``Retry-After``), and when the service reports that the same key is still
in flight; ``max_attempts`` bounds the attempts, and each retry is logged on the
``docnum_client`` logger. Other errors are raised at once as
:class:`~docnum_client.errors.DocnumError` subclasses. Listings are iterators that fetch the next
page when the previous one is used up.

A client keeps a connection pool: make one per process and share it (both are safe to share,
the async one within its event loop), and close it when done. Pass ``http`` (an
``httpx.Client`` or ``AsyncClient`` you configured: TLS, proxies, limits) or ``transport``
(``httpx.MockTransport`` in tests) to control how requests travel; a client you pass is yours to
close, and keeps its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import TracebackType
from typing import BinaryIO, TypeVar

import httpx

from docnum_client._core import (
    RETRYABLE_TRANSPORT_ERRORS,
    Call,
    Connection,
    LedgerFilter,
    Page,
    RetryPolicy,
    annotate_call,
    archive_series_call,
    audit_call,
    batch_call,
    confirm_call,
    create_key_call,
    create_series_call,
    csv_call,
    gaps_call,
    get_series_call,
    ledger_call,
    list_keys_call,
    list_series_call,
    next_call,
    number_call,
    preview_call,
    record_call,
    release_call,
    reservation_call,
    reserve_call,
    restore_series_call,
    retry_delay,
    revoke_key_call,
    set_counter_call,
    update_series_call,
    void_call,
)
from docnum_client.errors import DocnumError, answer_meta, unreachable
from docnum_client.models import (
    ApiKey,
    AuditEntry,
    CounterChange,
    Download,
    GapReport,
    IssuedBatch,
    IssuedNumber,
    LedgerEntry,
    NewKey,
    NextPreview,
    Reservation,
    Series,
)

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_ATTEMPTS = 4
PAGE_SIZE = 100

Destination = str | os.PathLike[str] | BinaryIO
Pages = Callable[[str | None], Call[Page[T]]]


def _check_options(http: object, transport: object) -> None:
    if http is not None and transport is not None:
        raise ValueError("Pass either http or transport: a transport belongs to its client.")


@contextlib.contextmanager
def _writable(destination: Destination) -> Iterator[BinaryIO]:
    """The file to write to; a file this opened is removed again if the download fails."""
    if not isinstance(destination, (str, os.PathLike)):
        yield destination
        return
    with open(destination, "wb") as out:
        try:
            yield out
        except BaseException:
            os.unlink(destination)
            raise


class DocnumClient:
    """The whole API from synchronous code (Django views, ERP jobs, scripts).

    ``base_url`` and ``api_key`` default to ``DOCNUM_URL`` and ``DOCNUM_API_KEY``; ``timeout``
    is seconds or an ``httpx.Timeout``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        _check_options(http, transport)
        self._policy = RetryPolicy(max_attempts=max_attempts)
        self._connection = Connection.resolve(base_url, api_key)
        self._owned = http is None
        self._http = http or httpx.Client(timeout=timeout, transport=transport)

    # --- numbers

    def next(
        self,
        series: str,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
        document_ref: str | None = None,
    ) -> IssuedNumber:
        """Issue the next number of ``series``; ``date`` picks the period (default: today there).

        Pass ``idempotency_key`` derived from your own document (its id) to make the whole
        operation safe to repeat: within the service's idempotency window the same key returns
        the same number. ``document_ref`` is kept with the number in the ledger.
        """
        return self._run(next_call(series, date, variables, idempotency_key, document_ref))

    def batch(
        self,
        series: str,
        count: int,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
        document_ref: str | None = None,
    ) -> IssuedBatch:
        """Issue ``count`` numbers of ``series`` in one call, all with the same date (and the
        same ``document_ref``)."""
        call = batch_call(series, count, date, variables, idempotency_key, document_ref)
        return self._run(call)

    def reserve(
        self,
        series: str,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
        *,
        count: int = 1,
        document_ref: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Reservation:
        """Reserve ``count`` numbers of ``series`` for a document not saved yet: they are taken
        as :meth:`next` takes them and held until ``expires_at`` (``ttl_seconds``, default: the
        service's). :meth:`confirm` them once the document is saved, :meth:`release` them if it
        is not; a gapless number let go is handed out again, or voided with its reason."""
        call = reserve_call(
            series, count, date, variables, document_ref, ttl_seconds, idempotency_key
        )
        return self._run(call)

    def confirm(
        self, series: str, reservation_id: str, *, document_ref: str | None = None
    ) -> Reservation:
        """Issue a reservation's numbers (with ``document_ref``, default: the one given at
        reserve). Confirming again answers the same; a released or expired reservation raises
        :class:`~docnum_client.errors.ReservationEnded`."""
        return self._run(confirm_call(series, reservation_id, document_ref))

    def release(self, series: str, reservation_id: str) -> Reservation:
        """Let a reservation's numbers go. Releasing again, or an expired one, answers it as it
        is; a confirmed one raises :class:`~docnum_client.errors.ReservationConfirmed`."""
        return self._run(release_call(series, reservation_id))

    def get_reservation(self, series: str, reservation_id: str) -> Reservation:
        """A reservation as it is now."""
        return self._run(reservation_call(series, reservation_id))

    def get_number(self, series: str, number: str) -> LedgerEntry:
        """The ledger's entry for ``number`` (any characters, ``/`` included); raises
        :class:`~docnum_client.errors.NumberNotFound` if the series never issued it."""
        return self._run(number_call(series, number))

    def void(
        self, series: str, number: str, reason: str, *, idempotency_key: str | None = None
    ) -> LedgerEntry:
        """Void ``number`` of a gapless series, with the ``reason`` the ledger keeps; needs an
        admin key. A retry after a lost answer gets the first answer back (``replayed``)."""
        return self._run(void_call(series, number, reason, idempotency_key))

    def ledger(
        self,
        series: str,
        *,
        period: str | None = None,
        variables: str | None = None,
        status: str | None = None,
        document_ref: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[LedgerEntry]:
        """Every entry of the ledger in the service's order, fetched ``page_size`` at a time;
        ``variables`` names one counter (``branch=BR07``), ``status`` is issued or voided,
        ``document_ref`` finds the numbers of one document."""
        where = LedgerFilter(period, variables, status, document_ref)
        return self._each(ledger_call(series, where, page_size))

    def annotate(self, series: str, number: str, document_ref: str) -> LedgerEntry:
        """Attach ``document_ref`` to ``number`` in the ledger (replacing the one it had)."""
        return self._run(annotate_call(series, number, document_ref))

    def set_counter(
        self,
        series: str,
        period: str,
        last_value: int,
        reason: str,
        *,
        variables: Mapping[str, str] | None = None,
        date: datetime.date | None = None,
        idempotency_key: str | None = None,
    ) -> CounterChange:
        """Go-live: the counter of ``period`` (and ``variables``) continues after
        ``last_value``; upwards only (:class:`~docnum_client.errors.DocnumError` 409 otherwise).
        Needs an admin key; a gapless series records the values passed as voided with
        ``reason``."""
        call = set_counter_call(
            series, period, last_value, reason, variables, date, idempotency_key
        )
        return self._run(call)

    def record_external(
        self,
        series: str,
        number: str,
        date: datetime.date,
        *,
        document_ref: str | None = None,
        idempotency_key: str | None = None,
    ) -> LedgerEntry:
        """Record ``number``, issued elsewhere for a document dated ``date``; the series never
        hands it out. Needs an admin key."""
        return self._run(record_call(series, number, date, document_ref, idempotency_key))

    def preview_next(
        self,
        series: str,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> NextPreview:
        """The number the next request would get; nothing is taken."""
        return self._run(preview_call(series, date, variables))

    def gaps(
        self, series: str, *, period: str | None = None, variables: str | None = None
    ) -> GapReport:
        """The values missing from one counter's ledger (default: the current period)."""
        return self._run(gaps_call(series, period, variables))

    def download_ledger(
        self,
        series: str,
        destination: Destination,
        *,
        period: str | None = None,
        variables: str | None = None,
        status: str | None = None,
    ) -> Download:
        """Stream the whole ledger (with the filters) as CSV into a path or a binary file,
        without holding it in memory. A path is removed again if the download breaks off."""
        response = self._run(csv_call(series, LedgerFilter(period, variables, status)))
        size = 0
        try:
            with _writable(destination) as out:
                try:
                    for chunk in response.iter_bytes():
                        size += out.write(chunk)
                except RETRYABLE_TRANSPORT_ERRORS as error:
                    raise unreachable(error) from error
        finally:
            response.close()
        return Download(size=size, **answer_meta(response))

    def ledger_csv(
        self,
        series: str,
        *,
        period: str | None = None,
        variables: str | None = None,
        status: str | None = None,
    ) -> bytes:
        """The whole ledger (with the filters) as CSV bytes."""
        out = io.BytesIO()
        self.download_ledger(series, out, period=period, variables=variables, status=status)
        return out.getvalue()

    # --- series

    def create_series(
        self, name: str, format: str, *, idempotency_key: str | None = None, **fields: object
    ) -> Series:
        """Create a series; ``fields`` are the other settings (``mode="gapless"``,
        ``reset="yearly"``, ``max_value=…``, see the service's documentation)."""
        return self._run(create_series_call(name, format, fields, idempotency_key))

    def list_series(
        self, *, archived: bool = False, page_size: int = PAGE_SIZE
    ) -> Iterator[Series]:
        """Every series by name (archived ones too with ``archived=True``)."""
        return self._each(list_series_call(archived, page_size))

    def get_series(self, name: str) -> Series:
        """The series with its counters and its ``etag``."""
        return self._run(get_series_call(name))

    def update_series(self, name: str, *, if_match: str | None = None, **changes: object) -> Series:
        """Change settings of a series (``format="…"``, ``effective_from=date``, …). With
        ``if_match`` (the ``etag`` it was read with), a series changed since raises
        :class:`~docnum_client.errors.PreconditionFailed` instead of being overwritten."""
        return self._run(update_series_call(name, changes, if_match))

    def archive_series(self, name: str) -> None:
        """Archive a series: it issues no more numbers until restored."""
        self._run(archive_series_call(name))

    def restore_series(self, name: str) -> Series:
        """Restore an archived series: it issues numbers again where it stopped."""
        return self._run(restore_series_call(name))

    # --- keys and audit

    def list_keys(self, *, revoked: bool = False, page_size: int = PAGE_SIZE) -> Iterator[ApiKey]:
        """The tenant's keys, oldest first (revoked ones too with ``revoked=True``)."""
        return self._each(list_keys_call(revoked, page_size))

    def create_key(
        self, scope: str = "issue", name: str = "", *, idempotency_key: str | None = None
    ) -> NewKey:
        """Create a key (``scope`` issue or admin); its secret is in the answer only."""
        return self._run(create_key_call(scope, name, idempotency_key))

    def revoke_key(self, prefix: str) -> ApiKey:
        """Revoke a key by its prefix; it stops working at once."""
        return self._run(revoke_key_call(prefix))

    def audit(
        self,
        *,
        action: str | None = None,
        series: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[AuditEntry]:
        """Administrative changes, newest first, optionally of one kind or one series."""
        return self._each(audit_call(action, series, page_size))

    # --- sending

    def _each(self, pages: Pages[T]) -> Iterator[T]:
        cursor: str | None = None
        while True:
            page = self._run(pages(cursor))
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def _run(self, call: Call[T]) -> T:
        attempt = 1
        while True:
            try:
                return call.answer(self._send(call))
            except DocnumError as error:
                delay = retry_delay(self._policy, call, error, attempt)
                if delay is None:
                    raise
            time.sleep(delay)
            attempt += 1

    def _send(self, call: Call[T]) -> httpx.Response:
        request = call.request(self._http, self._connection)
        try:
            response = self._http.send(request, stream=call.stream)
            if call.stream and not response.is_success:
                response.read()
                response.close()
        except RETRYABLE_TRANSPORT_ERRORS as error:
            raise unreachable(error) from error
        return response

    def close(self) -> None:
        """Close the connection pool, unless the ``http`` client was passed in."""
        if self._owned:
            self._http.close()

    def __enter__(self) -> DocnumClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncDocnumClient:
    """The whole API from asyncio code; the same calls and guarantees as :class:`DocnumClient`,
    with async iterators for listings."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        _check_options(http, transport)
        self._policy = RetryPolicy(max_attempts=max_attempts)
        self._connection = Connection.resolve(base_url, api_key)
        self._owned = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout, transport=transport)

    # --- numbers

    async def next(
        self,
        series: str,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
        document_ref: str | None = None,
    ) -> IssuedNumber:
        """See :meth:`DocnumClient.next`."""
        call = next_call(series, date, variables, idempotency_key, document_ref)
        return await self._run(call)

    async def batch(
        self,
        series: str,
        count: int,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
        document_ref: str | None = None,
    ) -> IssuedBatch:
        """See :meth:`DocnumClient.batch`."""
        call = batch_call(series, count, date, variables, idempotency_key, document_ref)
        return await self._run(call)

    async def reserve(
        self,
        series: str,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
        *,
        count: int = 1,
        document_ref: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Reservation:
        """See :meth:`DocnumClient.reserve`."""
        call = reserve_call(
            series, count, date, variables, document_ref, ttl_seconds, idempotency_key
        )
        return await self._run(call)

    async def confirm(
        self, series: str, reservation_id: str, *, document_ref: str | None = None
    ) -> Reservation:
        """See :meth:`DocnumClient.confirm`."""
        return await self._run(confirm_call(series, reservation_id, document_ref))

    async def release(self, series: str, reservation_id: str) -> Reservation:
        """See :meth:`DocnumClient.release`."""
        return await self._run(release_call(series, reservation_id))

    async def get_reservation(self, series: str, reservation_id: str) -> Reservation:
        """See :meth:`DocnumClient.get_reservation`."""
        return await self._run(reservation_call(series, reservation_id))

    async def get_number(self, series: str, number: str) -> LedgerEntry:
        """See :meth:`DocnumClient.get_number`."""
        return await self._run(number_call(series, number))

    async def void(
        self, series: str, number: str, reason: str, *, idempotency_key: str | None = None
    ) -> LedgerEntry:
        """See :meth:`DocnumClient.void`."""
        return await self._run(void_call(series, number, reason, idempotency_key))

    def ledger(
        self,
        series: str,
        *,
        period: str | None = None,
        variables: str | None = None,
        status: str | None = None,
        document_ref: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> AsyncIterator[LedgerEntry]:
        """See :meth:`DocnumClient.ledger`."""
        where = LedgerFilter(period, variables, status, document_ref)
        return self._each(ledger_call(series, where, page_size))

    async def annotate(self, series: str, number: str, document_ref: str) -> LedgerEntry:
        """See :meth:`DocnumClient.annotate`."""
        return await self._run(annotate_call(series, number, document_ref))

    async def set_counter(
        self,
        series: str,
        period: str,
        last_value: int,
        reason: str,
        *,
        variables: Mapping[str, str] | None = None,
        date: datetime.date | None = None,
        idempotency_key: str | None = None,
    ) -> CounterChange:
        """See :meth:`DocnumClient.set_counter`."""
        call = set_counter_call(
            series, period, last_value, reason, variables, date, idempotency_key
        )
        return await self._run(call)

    async def record_external(
        self,
        series: str,
        number: str,
        date: datetime.date,
        *,
        document_ref: str | None = None,
        idempotency_key: str | None = None,
    ) -> LedgerEntry:
        """See :meth:`DocnumClient.record_external`."""
        return await self._run(record_call(series, number, date, document_ref, idempotency_key))

    async def preview_next(
        self,
        series: str,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> NextPreview:
        """See :meth:`DocnumClient.preview_next`."""
        return await self._run(preview_call(series, date, variables))

    async def gaps(
        self, series: str, *, period: str | None = None, variables: str | None = None
    ) -> GapReport:
        """See :meth:`DocnumClient.gaps`."""
        return await self._run(gaps_call(series, period, variables))

    async def download_ledger(
        self,
        series: str,
        destination: Destination,
        *,
        period: str | None = None,
        variables: str | None = None,
        status: str | None = None,
    ) -> Download:
        """See :meth:`DocnumClient.download_ledger`; the file is written as chunks arrive."""
        response = await self._run(csv_call(series, LedgerFilter(period, variables, status)))
        size = 0
        try:
            with _writable(destination) as out:
                try:
                    async for chunk in response.aiter_bytes():
                        size += out.write(chunk)
                except RETRYABLE_TRANSPORT_ERRORS as error:
                    raise unreachable(error) from error
        finally:
            await response.aclose()
        return Download(size=size, **answer_meta(response))

    async def ledger_csv(
        self,
        series: str,
        *,
        period: str | None = None,
        variables: str | None = None,
        status: str | None = None,
    ) -> bytes:
        """See :meth:`DocnumClient.ledger_csv`."""
        out = io.BytesIO()
        await self.download_ledger(series, out, period=period, variables=variables, status=status)
        return out.getvalue()

    # --- series

    async def create_series(
        self, name: str, format: str, *, idempotency_key: str | None = None, **fields: object
    ) -> Series:
        """See :meth:`DocnumClient.create_series`."""
        return await self._run(create_series_call(name, format, fields, idempotency_key))

    def list_series(
        self, *, archived: bool = False, page_size: int = PAGE_SIZE
    ) -> AsyncIterator[Series]:
        """See :meth:`DocnumClient.list_series`."""
        return self._each(list_series_call(archived, page_size))

    async def get_series(self, name: str) -> Series:
        """See :meth:`DocnumClient.get_series`."""
        return await self._run(get_series_call(name))

    async def update_series(
        self, name: str, *, if_match: str | None = None, **changes: object
    ) -> Series:
        """See :meth:`DocnumClient.update_series`."""
        return await self._run(update_series_call(name, changes, if_match))

    async def archive_series(self, name: str) -> None:
        """See :meth:`DocnumClient.archive_series`."""
        await self._run(archive_series_call(name))

    async def restore_series(self, name: str) -> Series:
        """See :meth:`DocnumClient.restore_series`."""
        return await self._run(restore_series_call(name))

    # --- keys and audit

    def list_keys(
        self, *, revoked: bool = False, page_size: int = PAGE_SIZE
    ) -> AsyncIterator[ApiKey]:
        """See :meth:`DocnumClient.list_keys`."""
        return self._each(list_keys_call(revoked, page_size))

    async def create_key(
        self, scope: str = "issue", name: str = "", *, idempotency_key: str | None = None
    ) -> NewKey:
        """See :meth:`DocnumClient.create_key`."""
        return await self._run(create_key_call(scope, name, idempotency_key))

    async def revoke_key(self, prefix: str) -> ApiKey:
        """See :meth:`DocnumClient.revoke_key`."""
        return await self._run(revoke_key_call(prefix))

    def audit(
        self,
        *,
        action: str | None = None,
        series: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> AsyncIterator[AuditEntry]:
        """See :meth:`DocnumClient.audit`."""
        return self._each(audit_call(action, series, page_size))

    # --- sending

    async def _each(self, pages: Pages[T]) -> AsyncIterator[T]:
        cursor: str | None = None
        while True:
            page = await self._run(pages(cursor))
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def _run(self, call: Call[T]) -> T:
        attempt = 1
        while True:
            try:
                return call.answer(await self._send(call))
            except DocnumError as error:
                delay = retry_delay(self._policy, call, error, attempt)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _send(self, call: Call[T]) -> httpx.Response:
        request = call.request(self._http, self._connection)
        try:
            response = await self._http.send(request, stream=call.stream)
            if call.stream and not response.is_success:
                await response.aread()
                await response.aclose()
        except RETRYABLE_TRANSPORT_ERRORS as error:
            raise unreachable(error) from error
        return response

    async def aclose(self) -> None:
        """Close the connection pool, unless the ``http`` client was passed in."""
        if self._owned:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncDocnumClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
