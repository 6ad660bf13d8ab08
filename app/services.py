"""Everything one process of the service holds for its lifetime, built in the app's lifespan."""

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from app import idempotency
from app.auth import Authenticator
from app.catalog import SeriesCatalog
from app.counters import CounterLimits
from app.database import connect_direct, create_pool, database_url, direct_url
from app.exports import ExportSlots
from app.issuing import DateWindow, Issuer
from app.migrate import migrate
from app.settings import Settings

logger = logging.getLogger("docnum.services")

PRUNE_EVERY_SECONDS = 300.0


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    catalog: SeriesCatalog
    issuer: Issuer
    auth: Authenticator
    exports: ExportSlots


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Services]:
    url = database_url(settings)
    pool = await create_pool(url, settings)
    try:
        direct = await connect_direct(url, settings)
        try:
            applied = await migrate(direct)
        finally:
            await direct.close()
        if applied:
            logger.info("applied migrations: %s", ", ".join(applied))
        catalog = SeriesCatalog(pool, direct_url(settings, url), settings.cached_series)
        services = Services(
            settings=settings,
            pool=pool,
            catalog=catalog,
            issuer=Issuer(
                pool,
                idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
                reload=catalog.fresh,
                window=DateWindow(settings.earliest_date, settings.latest_date),
                limits=CounterLimits(settings.max_counters_per_series, settings.cached_counters),
            ),
            auth=Authenticator(pool, settings.auth_cache_seconds, settings.cached_keys),
            exports=ExportSlots(settings.max_concurrent_exports),
        )
        await services.catalog.start()
        pruner = asyncio.create_task(_prune_forever(pool, settings.idempotency_ttl_seconds))
        # What start-up built lives as long as the process: keep the collector from rescanning it.
        gc.collect()
        gc.freeze()
        try:
            yield services
        finally:
            pruner.cancel()
            await services.issuer.close()
            await services.catalog.stop()
    finally:
        await pool.close()


async def _prune_forever(pool: asyncpg.Pool, ttl_seconds: int) -> None:
    while True:
        await asyncio.sleep(PRUNE_EVERY_SECONDS)
        try:
            removed = await idempotency.prune(pool, ttl_seconds)
        except (OSError, asyncpg.PostgresError) as error:
            logger.warning("could not prune idempotency keys: %s", error)
        else:
            logger.debug("pruned %d expired idempotency keys", removed)
