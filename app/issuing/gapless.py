"""Gapless issuing with group commit.

A gapless number is handed out only after the transaction that advanced the counter and recorded
the number has committed, so every value a client sees is durable and none is skipped. One
transaction per number would serialise every caller on the counter row's lock and on one WAL
flush each. Instead, requests for the same counter that arrive while a transaction is in
flight wait in a queue; the next transaction serves the whole queue with one counter update, one
ledger insert and one commit. Values follow the order of arrival within the process. If that
transaction fails, every request in it fails and none is given a number. The same two statements
append the numbers' events to the counter's hash chain (see app.chain): the counter update
returns the chain's head under its lock, and the ledger insert stores the events and moves it.

Four failures belong to one request rather than to the group, and fail only that request: a
number that cannot be rendered from its variables (or breaks the series' number rules), a date
out of order, a number that collides with one already in the ledger, and a batch that does not
fit below max_value. The group is then served again without the request whose number could not
be rendered or whose date is out of order, or, for the other two, one request per transaction, so
that the others still get their numbers in order of arrival.

With ``date_order: strict``, values follow the order of arrival, so dates must too. A group whose
dates rise (or stay) is served as one: its earliest date, its first request's, is checked against
the counter's last date in the statement that advances the counter (``counters.advance``), and if
that date is later the first request fails and the group is served again without it. A group
whose dates step back is served one request per transaction instead, in order of arrival, so each
is checked against the last date really issued before it (never against a request that might
then fail itself), and a refusal names a date the ledger holds.

Reservations (requests with a ``Hold``) share the group with issues: their values come from the
same run, and their reservation rows commit with it (app.reservations).

A request waits for its number at most the pool's round-trip limit (see app.database), queue
included, then fails with ``TimeoutError`` (503). Its number may still be committed by the
transaction it was part of: it is then in the ledger, and a retry with the same Idempotency-Key
gets it; a number is never answered before its commit.
"""

import asyncio
from collections import deque
from dataclasses import dataclass, field

import asyncpg

from app.database import Connection, round_trip_limit
from app.definition import CounterKey
from app.issuing import counters, transaction
from app.issuing.issued import Outcome, Request
from app.problems import DateOrder, NumberCollision, SeriesExhausted

# Bounds one transaction so a flood of requests cannot build an unbounded statement, and keeps it
# short: a request's wait includes every transaction ahead of it on its counter. A group of ten
# batches of 10,000 held the counter for over a second; behind two of them, requests passed their
# deadline and got 503 for numbers that were then committed. Bigger groups save nothing there, as
# recording costs the same per number. A larger request is a group of its own.
MAX_VALUES_PER_TRANSACTION = 10_000


@dataclass(eq=False)
class _Waiter:
    request: Request
    future: asyncio.Future[Outcome] = field(default_factory=asyncio.Future)


class _OutOfOrder(Exception):
    """The group's dates step back in a series that keeps them in order: it is served one
    request per transaction."""


class GaplessIssuer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        idempotency_ttl_seconds: int,
        limits: counters.CounterLimits = counters.DEFAULT_LIMITS,
    ) -> None:
        self._pool = pool
        self._ttl = idempotency_ttl_seconds
        self._max_counters = limits.per_series
        # Keyed by the definition's version too: a group never mixes two versions of its series.
        self._queues: dict[tuple[int, int, CounterKey], deque[_Waiter]] = {}
        self._drains: set[asyncio.Task[None]] = set()  # the event loop keeps tasks only weakly

    async def issue(self, request: Request) -> Outcome:
        key = (request.series.id, request.series.version, request.counter)
        waiter = _Waiter(request)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque([waiter])
            drain = asyncio.get_running_loop().create_task(self._drain(key, queue))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        else:
            queue.append(waiter)
        async with asyncio.timeout(round_trip_limit(self._pool)):
            return await waiter.future

    async def _drain(self, key: tuple[int, int, CounterKey], queue: deque[_Waiter]) -> None:
        """Serve the queue group by group until it is empty, then let it go."""
        try:
            while queue:
                group = _take_group(queue)
                await self._serve(group)
        finally:
            del self._queues[key]
            for waiter in queue:  # only reachable if the task itself was cancelled
                if not waiter.future.done():
                    waiter.future.cancel()

    async def _serve(self, group: list[_Waiter]) -> None:
        while group:
            try:
                outcomes = await self._in_one_transaction(group)
            except transaction.RequestFailed as failed:  # the group is served again without it
                [waiter] = [w for w in group if w.request is failed.request]
                _fail(waiter, failed.problem)
                group.remove(waiter)
                continue
            except (_OutOfOrder, SeriesExhausted, NumberCollision) as problem:
                # A lone request is never out of order: its exhaustion or collision is its own.
                if len(group) == 1:
                    _fail(group[0], problem)
                    return
                for waiter in group:
                    await self._serve([waiter])
                return
            except BaseException as error:
                for waiter in group:
                    _fail(waiter, error)
                if not isinstance(error, Exception):
                    raise
                return
            for waiter, outcome in zip(group, outcomes, strict=True):
                if not waiter.future.done():  # its client may have gone away meanwhile
                    waiter.future.set_result(outcome)
            return

    async def _in_one_transaction(self, group: list[_Waiter]) -> list[Outcome]:
        requests = [w.request for w in group]
        async with self._pool.acquire() as conn, conn.transaction():
            return await transaction.serve(conn, requests, self._take, self._ttl)

    async def _take(
        self, conn: Connection, requests: list[Request], total: int
    ) -> transaction.Taken:
        """The group's run of values, and its chain head, in the statement that advances the
        counter under its lock."""
        series, counter = requests[0].series, requests[0].counter
        dates = _dates(requests, strict=series.date_order == "strict")
        try:
            advanced = await counters.advance(
                conn, series, counter, total, self._max_counters, dates
            )
        except DateOrder as refusal:
            raise transaction.RequestFailed(requests[0], refusal) from None
        if advanced is None:
            raise counters.exhausted(total)
        return transaction.Taken(counters.run(advanced.last, total, series.step), advanced.head)


def _dates(fresh: list[Request], *, strict: bool) -> counters.Dates:
    """The dates the group's values are taken for. When they must keep their order and step
    back within the group, raise _OutOfOrder; otherwise the earliest is the first request's."""
    latest = fresh[0].date
    for request in fresh:
        if strict and request.date < latest:
            raise _OutOfOrder
        latest = max(latest, request.date)
    return counters.Dates(fresh[0].date if strict else None, latest)


def _fail(waiter: _Waiter, error: BaseException) -> None:
    if not waiter.future.done():
        waiter.future.set_exception(error)


def _take_group(queue: deque[_Waiter]) -> list[_Waiter]:
    """The next group: waiters in arrival order, one per idempotency key, within the bound."""
    group: list[_Waiter] = []
    keys: set[str] = set()
    total = 0
    held: list[_Waiter] = []
    while queue:
        waiter = queue[0]
        if group and total + waiter.request.count > MAX_VALUES_PER_TRANSACTION:
            break
        queue.popleft()
        if waiter.future.done():  # cancelled while queued: it costs no number
            continue
        claim = waiter.request.claim
        if claim is not None and claim.key in keys:
            held.append(waiter)  # same key twice in flight: the later one replays the earlier
            continue
        if claim is not None:
            keys.add(claim.key)
        group.append(waiter)
        total += waiter.request.count
    queue.extendleft(reversed(held))
    return group
