"""Everything one process of the service holds for its lifetime, built in the app's lifespan."""

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from starlette.types import Scope

from app import idempotency, reservations
from app.auth import Authenticator, Principal
from app.catalog import SeriesCatalog
from app.database import connect_direct, create_pool, database_url, direct_url
from app.exports import ExportSlots
from app.issuing.counters import CounterLimits
from app.issuing.engine import DateWindow, Issuer
from app.migrate import migrate
from app.ratelimit import RateLimits
from app.settings import Settings

logger = logging.getLogger("docnum.services")

PRUNE_EVERY_SECONDS = 300.0
# A stop must not wait for a database that does not answer: these bound the steps of the stop
# that follow the requests in flight (see shutdown_grace_seconds).
GIVE_BACK_SECONDS = 0.5
CLOSE_SECONDS = 0.2
STOP_SECONDS = GIVE_BACK_SECONDS + CLOSE_SECONDS


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    catalog: SeriesCatalog
    issuer: Issuer
    auth: Authenticator
    exports: ExportSlots
    rate_limits: RateLimits

    async def authenticate(self, key: str, scope: Scope) -> Principal:
        """The principal of an API key, admitted by the rate limits: the one place both the lean
        path and FastAPI's dependencies authenticate. The limits' header fields for the answer
        are left in ``scope`` (see app.ratelimit)."""
        principal = await self.auth.verify(key)
        self.rate_limits.admit(principal, scope)
        return principal


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
                limits=CounterLimits(
                    settings.max_counters_per_series,
                    settings.cached_counters,
                    settings.cached_block_seconds,
                ),
            ),
            auth=Authenticator(pool, settings.auth_cache_seconds, settings.cached_keys),
            exports=ExportSlots(settings.max_concurrent_exports),
            rate_limits=RateLimits(
                settings.key_rate_limit,
                settings.tenant_rate_limit,
                settings.max_concurrent_requests_per_tenant,
            ),
        )
        await services.catalog.start()
        services.auth.start()
        pruner = asyncio.create_task(_prune_forever(pool, settings.idempotency_ttl_seconds))
        sweeper = asyncio.create_task(_expire_forever(pool, settings.reservation_sweep_seconds))
        # What start-up built lives as long as the process: keep the collector from rescanning it.
        gc.collect()
        gc.freeze()
        try:
            yield services
        finally:
            pruner.cancel()
            sweeper.cancel()
            await _give_back(services)
            await services.catalog.stop()
    finally:
        await _close(pool)


async def _give_back(services: Services) -> None:
    """Record key use and give back unused cached values, if the database answers in time."""
    try:
        async with asyncio.timeout(GIVE_BACK_SECONDS):
            await services.auth.close()
            await services.issuer.close()
    except TimeoutError:
        logger.warning("the database did not answer in time; unused cached values are skipped")


async def _close(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), CLOSE_SECONDS)
    except TimeoutError:  # the pool terminated its connections instead
        logger.warning("database connections did not close in time; dropped them")


async def _prune_forever(pool: asyncpg.Pool, ttl_seconds: int) -> None:
    while True:
        await asyncio.sleep(PRUNE_EVERY_SECONDS)
        try:
            removed = await idempotency.prune(pool, ttl_seconds)
            settled = await reservations.prune(pool, ttl_seconds)
        except (OSError, asyncpg.PostgresError) as error:
            logger.warning("could not prune idempotency keys and reservations: %s", error)
        else:
            logger.debug(
                "pruned %d expired idempotency keys and %d settled reservations", removed, settled
            )


async def _expire_forever(pool: asyncpg.Pool, every_seconds: float) -> None:
    """Expire lapsed reservations (app.reservations); every process does, sharing the work."""
    while True:
        await asyncio.sleep(every_seconds)
        try:
            expired = await reservations.expire_lapsed(pool)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            logger.warning("could not expire reservations: %r", error)
        else:
            if expired:
                logger.debug("expired %d reservations", expired)
