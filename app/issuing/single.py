"""How sequence and cached mode serve a request: each one on its own, without group commit.

A request with no Idempotency-Key, for a series without a ledger, needs values and nothing else:
the mode serves them as fast as it can (a coalesced ``nextval``, or a cached block) and no
connection is held for the request itself.

Any other request is served on one pooled connection: the values are taken and rendered, and
recorded in the ledger when the series keeps one. With an Idempotency-Key, all of it runs in one
transaction that first claims the key: a request whose key another request claimed first takes
no value and gets that request's stored answer instead, and the answer stored for replays is the
one built from the numbers this transaction took, so it commits, or rolls back, with them.
A reservation runs in one transaction too: its row commits with its ledger rows (the values
themselves, taken from a sequence or a block, are not given back if it rolls back).
"""

from abc import ABC, abstractmethod

import asyncpg

from app import idempotency, reservations
from app.database import Connection
from app.issuing.issued import Issued, Outcome, Request
from app.ledger import record_numbers


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
        async with self._pool.acquire() as conn:
            if request.claim is None and request.hold is None:
                return await self._take_and_record(conn, request)
            async with conn.transaction():
                if request.claim is None:
                    return await self._take_and_record(conn, request)
                series, claim = request.series, request.claim
                if not await idempotency.claim(conn, series, [claim], self._ttl):
                    return (await idempotency.replays(conn, series, [claim]))[claim.key]
                issued = await self._take_and_record(conn, request)
                await idempotency.store(conn, series, [(claim, request.respond(issued))])
                return issued

    async def _take_and_record(self, conn: Connection, request: Request) -> Issued:
        issued = request.render(await self._values(request, conn))
        if request.hold is not None:
            terms = [(request.hold, issued)]
            [issued] = await reservations.hold(conn, request.series, request.counter, terms)
        if request.series.ledger:
            await record_numbers(conn, request.series, request.counter, [issued])
        return issued
