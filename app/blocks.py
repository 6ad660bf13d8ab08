"""Cached issuing: values reserved in blocks and served from memory.

One ``UPDATE … RETURNING`` reserves a block of ``block_size`` values for this process; requests are
then served without touching the database. When a fifth of the block is used, the next block is
reserved in the background, so in steady state no request waits for the database. Values are
unique across processes because every block comes from the same counter row. What a process
reserved but did not hand out is skipped if it crashes; on a clean shutdown the unused tail is
given back when no other process has reserved after it.

A lane serves one version of its series' definition (see app.definition): a request that read a
newer one drops the lane, and its values are skipped rather than handed out under a definition
that no longer holds; a request that read an older one is sent back to read the series again.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from app import counters, metrics
from app.database import Connection
from app.definition import CounterKey, Series, StaleDefinition

logger = logging.getLogger("docnum.blocks")

PREFETCH_AT = 0.2


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
        self.spare: asyncio.Task[_Block] | None = None
        # The reservation that holds a connection: waiting for it needs no other one.
        self.connected: asyncio.Task[_Block] | None = None


def _install(lane: _Lane, spare: "asyncio.Task[_Block]") -> None:
    """Make a finished reservation the lane's block; the first caller to see it finished does."""
    if spare.done() and lane.spare is spare:
        lane.spare = None
        if not spare.cancelled() and spare.exception() is None:
            lane.current = spare.result()
            lane.size = lane.current.remaining


class BlockIssuer:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._lanes: dict[tuple[int, CounterKey], _Lane] = {}

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
        lane = self._lanes.get((series.id, key))
        if lane is not None and lane.series.version != series.version:
            if series.version < lane.series.version:
                raise StaleDefinition(series.name)
            lane = None
        if lane is None:
            lane = self._lanes[(series.id, key)] = _Lane(series)
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
            spare = lane.spare or self._prefetch(lane, key)
            if conn is not None and not spare.done() and lane.connected is not spare:
                return await self._reserve_run(series, key, 1, conn)
            try:
                await asyncio.shield(spare)  # a caller that goes away must not cancel it for all
            finally:
                _install(lane, spare)

    def _maybe_prefetch(self, lane: _Lane, key: CounterKey) -> None:
        block = lane.current
        if lane.spare is not None or block is None:
            return
        used = lane.size - block.remaining
        if used >= lane.size * PREFETCH_AT:
            self._prefetch(lane, key)

    def _prefetch(self, lane: _Lane, key: CounterKey) -> asyncio.Task[_Block]:
        spare = lane.spare = asyncio.get_running_loop().create_task(self._reserve(lane, key))
        # Its failure reaches whoever waits for it; if nobody does, it is not worth a warning.
        spare.add_done_callback(lambda task: task.cancelled() or task.exception())
        return spare

    async def _reserve(self, lane: _Lane, key: CounterKey) -> _Block:
        series = lane.series
        async with self._pool.acquire() as conn:
            lane.connected = asyncio.current_task()
            for size in (series.block_size, 1):
                last = await counters.advance(conn, series, key, size)
                if last is not None:
                    metrics.count_block_refill(series)
                    return _Block(last - (size - 1) * series.step, last, series.step)
        raise counters.exhausted(1)

    async def _reserve_run(
        self, series: Series, key: CounterKey, count: int, conn: "Connection | None"
    ) -> list[int]:
        """A run for one request alone, in one statement."""
        if conn is None:
            async with self._pool.acquire() as own:
                return await self._reserve_run(series, key, count, own)
        last = await counters.advance(conn, series, key, count)
        if last is None:
            raise counters.exhausted(count)
        return counters.run(last, count, series.step)

    async def close(self) -> None:
        """Give back unused values where no other process has reserved past them."""
        for (_, key), lane in self._lanes.items():
            unused: list[_Block] = []
            if lane.spare is not None:
                with contextlib.suppress(Exception):
                    unused.append(await lane.spare)
            if lane.current is not None and lane.current.remaining:
                unused.append(lane.current)
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                async with self._pool.acquire() as conn:
                    for block in sorted(unused, key=lambda b: b.last, reverse=True):
                        if not await counters.give_back(
                            conn, lane.series, key, block.next, block.last
                        ):
                            break
        self._lanes.clear()
