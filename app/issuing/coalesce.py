"""Concurrent requests for values of one counter, served by one database round trip.

While one round trip for a counter is in flight, later requests for the same counter wait;
the next round trip asks for all of their values at once and hands each request its own run,
in order of arrival. Used where values need no transaction of their own (sequence mode without
a ledger or an idempotency key): the database sees one ``nextval`` statement per group instead
of one per request.

A request waits at most ``wait_limit`` seconds, queue included, then fails with ``TimeoutError``.
"""

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

from app.problems import SeriesExhausted

Fetch = Callable[[int], Awaitable[list[int]]]


@dataclass(eq=False)
class _Waiter:
    count: int
    fetch: Fetch
    future: asyncio.Future[list[int]] = field(default_factory=asyncio.Future)


class Coalescer:
    def __init__(self, wait_limit: float | None = None) -> None:
        self._wait_limit = wait_limit
        self._queues: dict[Hashable, list[_Waiter]] = {}
        self._drains: set[asyncio.Task[None]] = set()

    async def take(self, key: Hashable, count: int, fetch: Fetch) -> list[int]:
        """``count`` values for ``key``; ``fetch(n)`` must return n ascending unique values."""
        waiter = _Waiter(count, fetch)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = [waiter]
            drain = asyncio.get_running_loop().create_task(self._drain(key, queue))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        else:
            queue.append(waiter)
        async with asyncio.timeout(self._wait_limit):
            return await waiter.future

    async def _drain(self, key: Hashable, queue: list[_Waiter]) -> None:
        try:
            while queue:
                group = queue[:]
                del queue[:]
                await _serve(group)
        finally:
            del self._queues[key]


async def _serve(group: list[_Waiter]) -> None:
    try:
        values = await group[-1].fetch(sum(w.count for w in group))
    except SeriesExhausted as exhausted:
        if len(group) == 1:
            _fail(group[0], exhausted)
            return
        for waiter in group:  # what no longer fits as a whole may still fit one by one
            await _serve([waiter])
        return
    except Exception as error:
        for waiter in group:
            _fail(waiter, error)
        return
    start = 0
    for waiter in group:
        if not waiter.future.done():
            waiter.future.set_result(values[start : start + waiter.count])
        start += waiter.count


def _fail(waiter: _Waiter, error: Exception) -> None:
    if not waiter.future.done():
        waiter.future.set_exception(error)
