"""Cached issuing: values reserved in blocks and served from memory.

One ``UPDATE … RETURNING`` reserves a block of ``block_size`` values for this process; requests are
then served without touching the database. When a fifth of the block is used, the next block is
reserved in the background, so in steady state no request waits for the database. Values are
unique across processes because every block comes from the same counter row. What a process
reserved but did not hand out is skipped if it crashes; on a clean shutdown the unused tail is
given back when no other process has reserved after it.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from app import counters
from app.errors import SeriesExhausted
from app.series import Series

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
    """The blocks of one (series, period) in this process."""

    def __init__(self, series: Series) -> None:
        self.series = series
        self.current: _Block | None = None
        self.size = 0
        self.spare: asyncio.Task[_Block] | None = None


class BlockIssuer:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._lanes: dict[tuple[int, str], _Lane] = {}

    async def take(self, series: Series, period: str, count: int) -> list[int]:
        """``count`` contiguous values: from memory when they fit, else in one round trip."""
        lane = self._lanes.get((series.id, period))
        if lane is None:
            lane = self._lanes[(series.id, period)] = _Lane(series)
        lane.series = series  # a changed block_size applies from the next block on
        while True:
            block = lane.current
            if block is not None and block.remaining >= count:
                values = block.take(count)
                self._maybe_prefetch(lane, period)
                return values
            if count > 1:
                # A batch that does not fit gets its own run; the current block keeps serving.
                return await self._reserve_run(series, period, count)
            if lane.spare is None:
                lane.spare = asyncio.get_running_loop().create_task(self._reserve(lane, period))
            spare = lane.spare
            try:
                await spare
            finally:
                if lane.spare is spare:  # the first request to wake installs the block
                    lane.spare = None
                    if not spare.cancelled() and spare.exception() is None:
                        lane.current = spare.result()
                        lane.size = lane.current.remaining

    def _maybe_prefetch(self, lane: _Lane, period: str) -> None:
        block = lane.current
        if lane.spare is not None or block is None:
            return
        used = lane.size - block.remaining
        if used >= lane.size * PREFETCH_AT:
            lane.spare = asyncio.get_running_loop().create_task(self._reserve(lane, period))

    async def _reserve(self, lane: _Lane, period: str) -> _Block:
        series = lane.series
        async with self._pool.acquire() as conn:
            for size in (series.block_size, 1):
                last = await counters.advance(conn, series, period, size)
                if last is not None:
                    return _Block(last - (size - 1) * series.step, last, series.step)
        raise SeriesExhausted("The series has reached its max_value.")

    async def _reserve_run(self, series: Series, period: str, count: int) -> list[int]:
        async with self._pool.acquire() as conn:
            last = await counters.advance(conn, series, period, count)
        if last is None:
            raise SeriesExhausted("The series has fewer values left than requested.")
        return counters.run(last, count, series.step)

    async def close(self) -> None:
        """Give back unused values where no other process has reserved past them."""
        for (_, period), lane in self._lanes.items():
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
                            conn, lane.series, period, block.next, block.last
                        ):
                            break
        self._lanes.clear()
