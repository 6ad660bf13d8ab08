"""The clients: :class:`DocnumClient` for plain code, :class:`AsyncDocnumClient` for asyncio.

Both give every call an ``Idempotency-Key`` (a fresh UUID unless you pass your own) and send it
again on each retry, so a retry after a lost answer gets the first answer back instead of a second
number. They retry by themselves when no answer arrived, on 503 (after ``Retry-After``), and when
the service reports that the same key is still in flight; ``max_attempts`` bounds the attempts.
Other errors are raised at once as :class:`~docnum_client.errors.DocnumError` subclasses.

A client keeps a connection pool: make one per process and share it (both are safe to share,
the async one within its event loop), and close it when done.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TypeVar

import httpx

from docnum_client._core import (
    RETRYABLE_TRANSPORT_ERRORS,
    Call,
    RetryPolicy,
    batch_call,
    http_options,
    next_call,
    number_call,
    void_call,
)
from docnum_client.errors import DocnumError, unreachable
from docnum_client.models import IssuedBatch, IssuedNumber, LedgerEntry

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_ATTEMPTS = 4


class DocnumClient:
    """Issue, look up and void numbers from synchronous code (Django views, ERP jobs, scripts)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self._policy = RetryPolicy(max_attempts=max_attempts)
        self._http = httpx.Client(**http_options(base_url, api_key, timeout))

    def next(
        self,
        series: str,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> IssuedNumber:
        """Issue the next number of ``series``; ``date`` picks the period (default: today there).

        Pass ``idempotency_key`` derived from your own document (its id) to make the whole
        operation safe to repeat: within the service's idempotency window the same key returns
        the same number.
        """
        return self._run(next_call(series, date, variables, idempotency_key))

    def batch(
        self,
        series: str,
        count: int,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> IssuedBatch:
        """Issue ``count`` numbers of ``series`` in one call, all with the same date."""
        return self._run(batch_call(series, count, date, variables, idempotency_key))

    def get_number(self, series: str, number: str) -> LedgerEntry:
        """The ledger's entry for ``number`` (any characters, ``/`` included); raises
        :class:`~docnum_client.errors.NumberNotFound` if the series never issued it."""
        return self._run(number_call(series, number))

    def void(self, series: str, number: str, reason: str) -> LedgerEntry:
        """Void ``number`` of a gapless series, with the ``reason`` the ledger keeps; needs an
        admin key. If an attempt's answer was lost, the retry finds the number voided and raises
        :class:`~docnum_client.errors.AlreadyVoided`: :meth:`get_number` shows the reason."""
        return self._run(void_call(series, number, reason))

    def _run(self, call: Call[T]) -> T:
        attempt = 1
        while True:
            try:
                return call.answer(self._send(call))
            except DocnumError as error:
                delay = self._policy.delay(error, attempt)
                if delay is None:
                    raise
            time.sleep(delay)
            attempt += 1

    def _send(self, call: Call[T]) -> httpx.Response:
        try:
            return self._http.request(call.method, call.path, json=call.body, headers=call.headers)
        except RETRYABLE_TRANSPORT_ERRORS as error:
            raise unreachable(error) from error

    def close(self) -> None:
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
    """Issue numbers from asyncio code; the same calls and guarantees as :class:`DocnumClient`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self._policy = RetryPolicy(max_attempts=max_attempts)
        self._http = httpx.AsyncClient(**http_options(base_url, api_key, timeout))

    async def next(
        self,
        series: str,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> IssuedNumber:
        """See :meth:`DocnumClient.next`."""
        return await self._run(next_call(series, date, variables, idempotency_key))

    async def batch(
        self,
        series: str,
        count: int,
        date: datetime.date | None = None,
        variables: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> IssuedBatch:
        """See :meth:`DocnumClient.batch`."""
        return await self._run(batch_call(series, count, date, variables, idempotency_key))

    async def get_number(self, series: str, number: str) -> LedgerEntry:
        """See :meth:`DocnumClient.get_number`."""
        return await self._run(number_call(series, number))

    async def void(self, series: str, number: str, reason: str) -> LedgerEntry:
        """See :meth:`DocnumClient.void`."""
        return await self._run(void_call(series, number, reason))

    async def _run(self, call: Call[T]) -> T:
        attempt = 1
        while True:
            try:
                return call.answer(await self._send(call))
            except DocnumError as error:
                delay = self._policy.delay(error, attempt)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _send(self, call: Call[T]) -> httpx.Response:
        try:
            return await self._http.request(
                call.method, call.path, json=call.body, headers=call.headers
            )
        except RETRYABLE_TRANSPORT_ERRORS as error:
            raise unreachable(error) from error

    async def aclose(self) -> None:
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
