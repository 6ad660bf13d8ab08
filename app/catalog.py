"""A per-process cache of series definitions, kept fresh by PostgreSQL notifications.

Issuing a number must not cost a query just to read the series. Every change to a series sends a
notification in its own transaction; each process listens and drops its copy. While the listening
connection is down, the cache is bypassed, so a process never serves a definition it cannot know
to be current for longer than a notification takes to arrive. It holds at most ``size`` series
(setting ``cached_series``); past it the one used least recently is dropped and read again when
next needed.
"""

import asyncio
import contextlib
import logging

import asyncpg

from app import series as series_sql
from app.database import KeepaliveConnection
from app.definition import Series
from app.lru import LRU
from app.series import SERIES_CHANNEL

logger = logging.getLogger("docnum.catalog")

RECONNECT_SECONDS = 1.0


class SeriesCatalog:
    def __init__(self, pool: asyncpg.Pool, url: str, size: int) -> None:
        self._pool = pool
        self._url = url
        self._cache: LRU[tuple[int, str], Series] = LRU(size)
        # Bumped by every invalidation: a read that started before one must not be cached.
        self._generation = 0
        self._listener: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    async def get(self, tenant_id: int, name: str) -> Series:
        key = (tenant_id, name)
        cached = self._cache.get(key)
        if cached is not None and self.listening:
            return cached
        generation = self._generation
        found = await series_sql.fetch(self._pool, tenant_id, name)
        if self.listening and generation == self._generation:
            self._cache[key] = found
        return found

    async def fresh(self, stale: Series) -> Series:
        """The series as it is now, after a request found ``stale`` out of date."""
        self.forget(stale.tenant_id, stale.name)
        return await self.get(stale.tenant_id, stale.name)

    def forget(self, tenant_id: int, name: str) -> None:
        self._generation += 1
        self._cache.pop((tenant_id, name), None)

    async def start(self) -> None:
        self._watch = asyncio.create_task(self._keep_listening())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._listener is not None:  # no goodbye: the server may not answer one
            self._listener.terminate()

    async def _keep_listening(self) -> None:
        while True:
            try:
                listener = await asyncpg.connect(
                    self._url, timeout=2, connection_class=KeepaliveConnection
                )
                await listener.add_listener(SERIES_CHANNEL, self._on_notify)
            except (OSError, asyncpg.PostgresError, TimeoutError) as error:
                logger.warning("cannot listen for series changes (%s); retrying", error)
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            self._generation += 1
            self._cache.clear()
            self._listener = listener
            closed = asyncio.Event()
            listener.add_termination_listener(lambda _conn, ended=closed: ended.set())
            await closed.wait()
            self._listener = None
            logger.warning("lost the series-change listener; cache bypassed until it is back")

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        tenant, _, name = str(payload).partition(":")
        self.forget(int(tenant), name)
