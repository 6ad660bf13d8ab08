"""How sequence and cached mode serve a request: each one on its own, without group commit.

A request with no Idempotency-Key, for a series without a ledger, needs values and nothing else:
the mode serves them as fast as it can (a coalesced ``nextval``, or a cached block) and no
connection is held for the request itself.

Any other request is served on one pooled connection, by the steps every mode shares
(app.issuing.transaction): with an Idempotency-Key, all of them in one transaction that first
claims the key, so that the answer stored for replays commits, or rolls back, with the numbers it
names. A reservation runs in one transaction too: its row commits with its ledger rows (the
values themselves, taken from a sequence or a block, are not given back if it rolls back). A
request that only records its numbers needs no transaction: that is one statement.
"""

import contextlib
from abc import ABC, abstractmethod

import asyncpg

from app.database import Connection
from app.issuing import transaction
from app.issuing.issued import Outcome, Request


class SingleIssuer(ABC):
    """A mode that serves each request alone; subclasses say how values are taken."""

    def __init__(self, pool: asyncpg.Pool, idempotency_ttl_seconds: int) -> None:
        self._pool = pool
        self._ttl = idempotency_ttl_seconds

    @abstractmethod
    async def _values(self, request: Request, conn: "Connection | None") -> list[int]:
        """``request.count`` values for its counter; on ``conn`` when given, else as the mode
        serves a request that needs nothing but values."""

    async def issue(self, request: Request) -> Outcome:
        if request.claim is None and request.hold is None and not request.series.ledger:
            return request.render(await self._values(request, None))
        alone = request.claim is None and request.hold is None  # one statement to record
        try:
            async with (
                self._pool.acquire() as conn,
                contextlib.nullcontext() if alone else conn.transaction(),
            ):
                [outcome] = await transaction.serve(conn, [request], self._take, self._ttl)
        except transaction.RequestFailed as failed:
            raise failed.problem from None
        return outcome

    async def _take(
        self, conn: Connection, requests: list[Request], total: int
    ) -> transaction.Taken:
        [request] = requests
        return transaction.Taken(await self._values(request, conn))
