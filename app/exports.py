"""CSV exports of the ledger, which must never starve issuing of database connections.

- A process streams at most ``max_concurrent_exports`` exports at once; one more is refused at
  once with 503 ``/problems/too-many-exports`` and ``Retry-After``. The slot is held from the
  request to the end of the response, however it ends (complete, client gone, cut), since
  :class:`ExportResponse` gives it back around the whole of its own sending.
- An export holds no connection and no transaction while it waits for its client: the ledger is
  read in keyset pages, each on a connection taken and given back before the page is sent (see
  ``app.ledger.csv_chunks``). A slow reader costs a slot, never a pool connection.
- The first page is read before the 200 goes out, so a database that cannot answer then is a
  503 problem like anywhere else. A failure after that (the database gone between two pages)
  leaves the body unfinished: the server closes the connection without the end of the chunked
  body, so the client sees a broken transfer, never a CSV that looks complete.
"""

import logging
from collections.abc import AsyncIterator

import asyncpg
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app import ledger
from app.definition import Series
from app.problems import TooManyExports

logger = logging.getLogger("docnum.exports")

# How long a client refused for too many exports should wait before it asks again.
EXPORT_RETRY_AFTER_SECONDS = 5


class ExportSlots:
    """How many exports this process is streaming, against its limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self) -> None:
        if self.in_use >= self.limit:
            raise TooManyExports(
                f"{self.limit} exports are already in progress in this process; retry.",
                retry_after=EXPORT_RETRY_AFTER_SECONDS,
            )
        self.in_use += 1

    def give_back(self) -> None:
        self.in_use -= 1


class ExportResponse(StreamingResponse):
    """A streamed CSV that gives its export slot back when it is done sending, however it ends,
    and that leaves the body unfinished when the rows stop coming for any reason."""

    def __init__(self, chunks: AsyncIterator[str], slots: ExportSlots, filename: str) -> None:
        super().__init__(
            chunks,
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
        self._slots = slots

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        except Exception as error:
            # The client went away, or the rows stopped coming (the database gone between two
            # pages). Returning without the final (empty) body message makes the server close
            # the connection mid-body: the client cannot take what it got for the whole ledger.
            logger.warning("CSV export ended before its last row: %r", error)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back()


async def csv_response(
    pool: asyncpg.Pool,
    slots: ExportSlots,
    series: Series,
    *,
    period: str | None,
    variables: str | None,
    status: str | None,
    filename: str,
    document_ref: str | None = None,
) -> ExportResponse:
    """The ledger of ``series`` as a streamed CSV, within this process's export limit."""
    slots.take()
    try:
        chunks = await ledger.csv_chunks(
            pool,
            series,
            period=period,
            variables=variables,
            status=status,
            document_ref=document_ref,
        )
    except BaseException:
        slots.give_back()
        raise
    return ExportResponse(chunks, slots, filename)
