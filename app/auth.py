"""API keys: how they look, how they are checked, and who a request acts for.

A key is ``dn_<prefix>_<secret>``: the prefix finds the row and is what people see in lists and
the audit trail; the whole key is stored only as a SHA-256 (the secret has 256 random bits, so a
slow password hash would add cost and no safety). Verified keys are trusted from memory for a few
seconds, so issuing a number costs no authentication query; a revoked key stops working within
that time on every process, and at once on the process that revoked it. A key that was refused is
refused from memory for as long, so a client retrying with a wrong key costs no query either. A
process remembers at most ``size`` keys of each kind (setting ``cached_keys``), dropping the one
used least recently.

Authentication only reads: it works on a database that accepts no writes (during a failover),
and a key's secret is verified before anything is recorded about it. When a key was last used is
written in the background, for every key used since the last write at once, at most once every
``MARK_USED_EVERY_SECONDS``; a failed write is tried again with the next.
"""

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import asyncpg

from app.lru import LRU
from app.problems import Forbidden, Unauthorized

Scope = Literal["issue", "admin"]
SCOPES: tuple[Scope, ...] = ("issue", "admin")

PREFIX_PATTERN = r"^[0-9a-f]{8}$"
KEY_SHAPE = re.compile(r"dn_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")

logger = logging.getLogger("docnum.auth")

MARK_USED_EVERY_SECONDS = 1.0
# Memory bounds: past them a cache starts over (it only saves queries).

# Revoked keys are never returned.
FIND_KEY = """
SELECT k.id, k.tenant_id, t.name AS tenant, k.prefix, k.name, k.scope, k.secret_hash
FROM api_keys AS k JOIN tenants AS t ON t.id = k.tenant_id
WHERE k.prefix = $1 AND k.revoked_at IS NULL
"""
UNKNOWN_KEY = "The API key is unknown or revoked."
MARK_USED = "UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1::bigint[])"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: one key of one tenant."""

    tenant_id: int
    tenant: str
    key_id: int
    prefix: str
    name: str
    scope: Scope

    @property
    def actor(self) -> str:
        """How the audit trail names this key."""
        return f"key {self.prefix}" + (f" ({self.name})" if self.name else "")

    def require(self, scope: Scope) -> None:
        if scope == "admin" and self.scope != "admin":
            raise Forbidden("This needs a key with the admin scope.")


def new_key() -> tuple[str, str, bytes]:
    """A fresh key: (the key to show once, its prefix, its hash to store)."""
    prefix = secrets.token_hex(4)
    key = f"dn_{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, hash_key(key)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, cache_seconds: float, size: int) -> None:
        self._pool = pool
        self._cache_seconds = cache_seconds
        self._cache: LRU[bytes, tuple[Principal, float]] = LRU(size)
        self._refused: LRU[bytes, float] = LRU(size)  # digest -> until when
        self._lookups: dict[bytes, asyncio.Task[Principal]] = {}
        self._used: set[int] = set()
        self._marker: asyncio.Task[None] | None = None

    async def verify(self, key: str) -> Principal:
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            self._used.add(cached[0].key_id)
            return cached[0]
        refused = self._refused.get(digest)
        if refused is not None and refused > now:
            raise Unauthorized(UNKNOWN_KEY)
        # Requests with the same key share one lookup: a burst arriving as the cached entry
        # expires would otherwise send one query per request.
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = self._lookups[digest] = asyncio.create_task(self._look_up(key, digest))
            lookup.add_done_callback(lambda _: self._lookups.pop(digest, None))
        principal = await asyncio.shield(lookup)
        self._used.add(principal.key_id)
        return principal

    async def _look_up(self, key: str, digest: bytes) -> Principal:
        now = time.monotonic()
        match = KEY_SHAPE.fullmatch(key)
        if match is None:
            raise Unauthorized("The API key is malformed.")
        row = await self._pool.fetchrow(FIND_KEY, match.group(1))
        if row is None or not hmac.compare_digest(row["secret_hash"], digest):
            self._cache.pop(digest, None)
            self._refused[digest] = now + self._cache_seconds
            raise Unauthorized(UNKNOWN_KEY)
        principal = Principal(
            tenant_id=row["tenant_id"],
            tenant=row["tenant"],
            key_id=row["id"],
            prefix=row["prefix"],
            name=row["name"],
            scope=row["scope"],
        )
        self._cache[digest] = (principal, now + self._cache_seconds)
        return principal

    def start(self) -> None:
        self._marker = asyncio.create_task(self._mark_used_forever())

    async def close(self) -> None:
        """Stop marking keys used, after writing what is pending (if the database answers)."""
        if self._marker is not None:
            self._marker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._marker
        await self.mark_used()

    async def mark_used(self) -> None:
        """Record when the keys used since the last call were used, in one statement."""
        used, self._used = self._used, set()
        if not used:
            return
        try:
            await self._pool.execute(MARK_USED, list(used))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            logger.warning("could not record when %d keys were used: %r", len(used), error)
            self._used |= used

    async def _mark_used_forever(self) -> None:
        while True:
            await asyncio.sleep(MARK_USED_EVERY_SECONDS)
            await self.mark_used()

    def forget(self, prefix: str) -> None:
        """Drop a key from this process's memory at once (after revoking it)."""
        for digest, (principal, _) in list(self._cache.items()):
            if principal.prefix == prefix:
                del self._cache[digest]
