"""Cached issuing: values reserved in blocks and served from memory.

One ``UPDATE … RETURNING`` reserves a block of values for this process; requests are then served
without touching the database. When a fifth of the block is used, the next block is reserved in
the background, so in steady state no request waits for the database. Values are unique across
processes because every block comes from the same counter row, whatever its size. What a process
reserved but did not hand out is skipped if it crashes; on a clean shutdown the unused tail is
given back when no other process has reserved after it.

A block is the series' ``block_size`` values, or more for a busy counter: the next block is
sized to last ``block_seconds`` (setting ``cached_block_seconds``) at the rate the current one
was used until the next was asked for, at most ``GROWTH_LIMIT`` times ``block_size``. A block of
100 lasts 13 ms at 7,500 requests a second, less than its reservation can take while the event
loop serves every request ahead of it, and then every request in flight waits for it (the tail
latency this sizing removes). A quiet counter's blocks shrink back the same way. A crash skips
what the process held: its block and the next, each at most that size.

A lane serves one version of its series' definition (see app.definition): a request that read a
newer one drops the lane, and its values are skipped rather than handed out under a definition
that no longer holds; a request that read an older one is sent back to read the series again.

A process keeps lanes for at most ``in_memory`` counters (setting ``cached_counters``), dropping the
one used least recently. What a dropped lane holds leaves it at once, so nothing it gives back is
also handed out: a request that was waiting for its next block reserves its value on its own
instead (looking the lane up again could drop another's lane, and so on, while more counters are
busy than lanes are kept). The unused values are then given back by one background task, a batch
of lanes per transaction, as on a clean stop: no request waits for that. Lanes waiting to give
back are bounded too; past the bound the oldest one's values are skipped, as after a crash.
"""

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass

import asyncpg

from app import metrics
from app.database import Connection
from app.definition import CounterKey, Series, StaleDefinition
from app.issuing import counters
from app.issuing.issued import Request
from app.issuing.single import SingleIssuer
from app.lru import LRU

logger = logging.getLogger("docnum.blocks")

PREFETCH_AT = 0.2
# A busy lane's blocks are at most this many times its series' block_size.
GROWTH_LIMIT = 100
# Dropped lanes whose unused values are given back in one transaction.
GIVE_BACK_AT_ONCE = 100


@dataclass
class _Block:
    next: int
    last: int
    step: int

    @property
    def remaining(self) -> int:
        return 0 if self.next > self.last else (self.last - self.next) // self.step + 1

    def take(self, count: int) -> list[int]:
        values = list(range(self.next, self.next + count * self.step, self.step))
        self.next += count * self.step
        return values


class _Lane:
    """The blocks of one (series, counter key) in this process, for one version of the series."""

    def __init__(self, series: Series) -> None:
        self.series = series
        self.current: _Block | None = None
        self.size = 0
        self.started = 0.0  # when the current block was installed (time.monotonic)
        self.spare: asyncio.Task[_Block] | None = None
        # The reservation that holds a connection: waiting for it needs no other one.
        self.connected: asyncio.Task[_Block] | None = None
        self.dropped = False  # by the cache: what it held went to a lane of its own


def _install(lane: _Lane, spare: "asyncio.Task[_Block]") -> None:
    """Make a finished reservation the lane's block; the first caller to see it finished does."""
    if spare.done() and lane.spare is spare:
        lane.spare = None
        if not spare.cancelled() and spare.exception() is None:
            lane.current = spare.result()
            lane.size = lane.current.remaining
            lane.started = time.monotonic()


class BlockIssuer(SingleIssuer):
    def __init__(
        self,
        pool: asyncpg.Pool,
        idempotency_ttl_seconds: int,
        limits: counters.CounterLimits = counters.DEFAULT_LIMITS,
    ) -> None:
        super().__init__(pool, idempotency_ttl_seconds)
        self._max_counters = limits.per_series
        self._block_seconds = limits.block_seconds
        self._lanes: LRU[tuple[int, CounterKey], _Lane] = LRU(limits.in_memory, self._drop)
        self._dropped: deque[tuple[CounterKey, _Lane]] = deque(maxlen=limits.in_memory)
        self._giving_back: asyncio.Task[None] | None = None

    async def _values(self, request: Request, conn: "Connection | None") -> list[int]:
        return await self.take(request.series, request.counter, request.count, conn)

    async def take(
        self, series: Series, key: CounterKey, count: int, conn: "Connection | None" = None
    ) -> list[int]:
        """``count`` contiguous values: from memory when they fit, else in one round trip.

        A caller that already holds a pooled connection passes it. It waits for the next block
        only once that reservation has a connection; until then, what it needs is reserved on
        the caller's connection (in its transaction, if any): waiting for a reservation that
        still needs a connection could wait for ever once every connection of the pool is held
        by a caller doing the same.
        """
        lane = self._lane(series, key)
        while True:
            block = lane.current
            if block is not None and block.remaining >= count:
                values = block.take(count)
                self._maybe_prefetch(lane, key)
                return values
            spare = lane.spare
            if (block is None or not block.remaining) and spare is not None and spare.done():
                _install(lane, spare)  # a failed one is dropped, and tried again below
                if lane.current is not block:
                    continue
            if count > 1:
                # A batch that does not fit gets its own run; the current block keeps serving.
                return await self._reserve_run(series, key, count, conn)
            spare = lane.spare or self._prefetch(lane, key, lane.series.block_size)
            if conn is not None and not spare.done() and lane.connected is not spare:
                return await self._reserve_run(series, key, 1, conn)
            try:
                await asyncio.shield(spare)  # a caller that goes away must not cancel it for all
            finally:
                _install(lane, spare)
            if lane.dropped:  # meanwhile: what it held is being given back, not to be taken
                return await self._reserve_run(series, key, count, conn)

    def _lane(self, series: Series, key: CounterKey) -> _Lane:
        lane = self._lanes.get((series.id, key))
        if lane is not None and lane.series.version != series.version:
            if series.version < lane.series.version:
                raise StaleDefinition(series.name)
            lane = None
        if lane is None:
            lane = self._lanes[(series.id, key)] = _Lane(series)
        return lane

    def _maybe_prefetch(self, lane: _Lane, key: CounterKey) -> None:
        block = lane.current
        if lane.spare is not None or block is None:
            return
        used = lane.size - block.remaining
        if used >= lane.size * PREFETCH_AT:
            self._prefetch(lane, key, self._next_size(lane, used))

    def _next_size(self, lane: _Lane, used: int) -> int:
        """The size of the lane's next block: what it would use in ``block_seconds`` at the rate
        it used ``used`` values of its current block, within [block_size, GROWTH_LIMIT times]."""
        smallest = lane.series.block_size
        elapsed = time.monotonic() - lane.started
        if not self._block_seconds or elapsed <= 0:
            return smallest
        wanted = math.ceil(used / elapsed * self._block_seconds)
        return max(smallest, min(wanted, smallest * GROWTH_LIMIT))

    def _prefetch(self, lane: _Lane, key: CounterKey, size: int) -> asyncio.Task[_Block]:
        """Reserve the lane's next block of ``size`` values in the background."""
        reserve = self._reserve(lane, key, size)
        spare = lane.spare = asyncio.get_running_loop().create_task(reserve)
        # Its failure reaches whoever waits for it; if nobody does, it is not worth a warning.
        spare.add_done_callback(lambda task: task.cancelled() or task.exception())
        return spare

    async def _reserve(self, lane: _Lane, key: CounterKey, wanted: int) -> _Block:
        series = lane.series
        async with self._pool.acquire() as conn:
            lane.connected = asyncio.current_task()
            # Near max_value a smaller block may still fit, and one value after that.
            for size in dict.fromkeys((wanted, series.block_size, 1)):
                advanced = await counters.advance(conn, series, key, size, self._max_counters)
                if advanced is not None:
                    metrics.count_block_refill(series)
                    last = advanced.last
                    return _Block(last - (size - 1) * series.step, last, series.step)
        raise counters.exhausted(1)

    async def _reserve_run(
        self, series: Series, key: CounterKey, count: int, conn: "Connection | None"
    ) -> list[int]:
        """A run for one request alone, in one statement."""
        if conn is None:
            async with self._pool.acquire() as own:
                return await self._reserve_run(series, key, count, own)
        advanced = await counters.advance(conn, series, key, count, self._max_counters)
        if advanced is None:
            raise counters.exhausted(count)
        return counters.run(advanced.last, count, series.step)

    def _drop(self, lanes_key: tuple[int, CounterKey], lane: _Lane) -> None:
        """Close a lane the cache let go, and queue it to give its unused values back."""
        self._dropped.append((lanes_key[1], _closed(lane)))
        if self._giving_back is None or self._giving_back.done():
            self._giving_back = asyncio.get_running_loop().create_task(self._give_back_dropped())

    async def _give_back_dropped(self) -> None:
        while self._dropped:
            batch = [
                self._dropped.popleft() for _ in range(min(GIVE_BACK_AT_ONCE, len(self._dropped)))
            ]
            await self._give_back(batch)

    async def _give_back(self, lanes: list[tuple[CounterKey, _Lane]]) -> None:
        """Give back what closed lanes hold unused, where no other process reserved past it."""
        tails: list[counters.Tail] = []
        for key, lane in lanes:
            held = [lane.current] if lane.current is not None else []
            if lane.spare is not None:
                await asyncio.wait([lane.spare])
                if not lane.spare.cancelled() and lane.spare.exception() is None:
                    held.append(lane.spare.result())
            tail = _tail(lane.series, key, held)
            if tail is not None:
                tails.append(tail)
        if not tails:
            return
        try:
            async with self._pool.acquire() as conn:
                await counters.give_back(conn, tails)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            logger.warning(
                "could not give back unused values of %d counters: %r", len(tails), error
            )

    async def close(self) -> None:
        """Give back unused values where no other process has reserved past them."""
        if self._giving_back is not None:
            await self._giving_back
        await self._give_back([(key, _closed(lane)) for (_, key), lane in self._lanes.items()])
        self._lanes.clear()


def _closed(lane: _Lane) -> _Lane:
    """What a lane holds, moved to a lane of its own that no request can reach. ``lane`` is left
    empty and marked dropped: a request still waiting for its block reserves its value alone."""
    closed = _Lane(lane.series)
    closed.current, closed.spare = lane.current, lane.spare
    lane.current = lane.spare = None
    lane.dropped = True
    return closed


def _tail(series: Series, key: CounterKey, held: list[_Block]) -> counters.Tail | None:
    """The unused values of a lane's blocks that may still be the top of the counter: those of
    the block reserved last, and of the one before it when nothing was reserved in between."""
    unused = sorted((b for b in held if b.remaining), key=lambda b: b.last, reverse=True)
    if not unused:
        return None
    first = unused[0].next
    for lower in unused[1:]:
        if lower.last + series.step != first:
            break
        first = lower.next
    return counters.Tail(series.id, key, first, unused[0].last, series.step)
