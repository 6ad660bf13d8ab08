"""Idempotent retries: the same Idempotency-Key never costs a second number.

A key is claimed by inserting its row inside the transaction that issues the numbers, and its
answer is written in that same transaction. So a claim and its answer commit together or not at
all: a crash cannot leave a key that owns no answer, nor an answer without its numbers. A second
request with the same key, on any process, waits on the row until the first transaction ends,
then finds the stored answer and replays it.

Keys are scoped by tenant and by a series id: issuing and voiding use their series' id, and the
changes that belong to no series (creating a series or a key) use ``TENANT_SCOPE`` (0), an id no
series has (ids start at 1). A key is matched with the request it was first used for by a hash
that names the operation too, so one key reused for another operation is refused, never replayed.

The header takes the key raw (``8e03...``) or as an RFC 8941 structured-field string
(``"8e03..."``, with ``\\"`` and ``\\\\`` escapes), as the IETF draft defines it; both forms of one
value are the same key, since the stored key is the decoded value.
"""

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple, Protocol

import asyncpg

from app.database import Connection, Executor
from app.issuing.issued import Claim, Replayed
from app.problems import IdempotencyKeyInFlight, IdempotencyKeyReused

# 1 to 255 printable ASCII characters, raw (not starting with a double quote) or as a
# structured-field string: in double quotes, with " and \ escaped by a backslash.
_SF_CHAR = r'[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\]'
KEY_PATTERN = rf'^(?:"(?:{_SF_CHAR}){{1,255}}"|[\x20\x21\x23-\x7e][\x20-\x7e]{{0,254}})$'
KEY_DESCRIPTION = (
    "1 to 255 printable ASCII characters, raw or as a structured-field string "
    '(`"8e03..."`, RFC 8941; both forms of one value are the same key). Retry with the same '
    "key to get the same answer, never a second change."
)
REPLAYED_HEADER = "Idempotent-Replayed"
# Expired rows count as free: they are taken over as if new.
CLAIM_KEYS = """
INSERT INTO idempotency_keys AS k (tenant_id, series_id, key, request_hash)
SELECT $1, $2, key, request_hash FROM unnest($3::text[], $4::bytea[]) AS u (key, request_hash)
ORDER BY key
ON CONFLICT (tenant_id, series_id, key) DO UPDATE
    SET request_hash = excluded.request_hash, status_code = NULL, body = NULL,
        created_at = now()
    WHERE k.created_at < now() - make_interval(secs => $5)
RETURNING key
"""
STORE_ANSWERS = """
UPDATE idempotency_keys AS k SET status_code = $5, body = u.body
FROM unnest($3::text[], $4::bytea[]) AS u (key, body)
WHERE k.tenant_id = $1 AND k.series_id = $2 AND k.key = u.key
"""
SELECT_ANSWERS = """
SELECT key, request_hash, status_code, body FROM idempotency_keys
WHERE tenant_id = $1 AND series_id = $2 AND key = ANY($3::text[])
"""
SELECT_FRESH_ANSWER = """
SELECT request_hash, status_code, body FROM idempotency_keys
WHERE tenant_id = $1 AND series_id = $2 AND key = $3
  AND created_at >= now() - make_interval(secs => $4)
"""
PRUNE_EXPIRED = "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)"

# The scope of keys sent with changes that belong to no series.
TENANT_SCOPE = 0


class Scope(Protocol):
    """Where a key is unique: a tenant and a series id (a ``Series``, or a ``TenantScope``)."""

    @property
    def tenant_id(self) -> int: ...

    @property
    def id(self) -> int: ...


class TenantScope(NamedTuple):
    tenant_id: int
    id: int = TENANT_SCOPE


def key_value(header: str) -> str:
    """The key a header names: the decoded value of a structured-field string, else the raw text.

    The header was already checked against ``KEY_PATTERN``.
    """
    if header.startswith('"'):
        return re.sub(r"\\(.)", r"\1", header[1:-1])
    return header


def claim_of(header: str | None, operation: str, request: Mapping[str, Any]) -> Claim | None:
    """The claim of a request that sent an Idempotency-Key header, for one operation."""
    if header is None:
        return None
    return Claim(key_value(header), request_hash(operation, dict(request)))


def request_hash(endpoint: str, body: dict[str, Any]) -> bytes:
    """A fingerprint of what was asked, insensitive to JSON spacing and key order."""
    canonical = json.dumps([endpoint, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).digest()


async def claim(conn: Connection, series: Scope, claims: list[Claim], ttl_seconds: int) -> set[str]:
    """Claim the keys; return those this transaction now owns (the others have answers)."""
    rows = await conn.fetch(
        CLAIM_KEYS,
        series.tenant_id,
        series.id,
        [c.key for c in claims],
        [c.request_hash for c in claims],
        ttl_seconds,
    )
    return {row["key"] for row in rows}


async def store(
    conn: Connection, series: Scope, answers: list[tuple[Claim, bytes]], status: int = 201
) -> None:
    if answers:
        await conn.execute(
            STORE_ANSWERS,
            series.tenant_id,
            series.id,
            [c.key for c, _ in answers],
            [body for _, body in answers],
            status,
        )


async def replays(conn: Connection, series: Scope, claims: list[Claim]) -> dict[str, Replayed]:
    """The stored answers of keys this transaction could not claim."""
    rows = await conn.fetch(SELECT_ANSWERS, series.tenant_id, series.id, [c.key for c in claims])
    return {
        row["key"]: Replayed(row["request_hash"], row["status_code"], row["body"]) for row in rows
    }


def stored_answer(claim: Claim, stored: Replayed) -> tuple[int, bytes]:
    """The status and body stored for the key, if it was used for this same request."""
    if stored.request_hash != claim.request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used for a different request; use a new key."
        )
    if stored.status is None or stored.body is None:
        raise IdempotencyKeyInFlight(
            "The first request with this key has not finished; retry shortly.",
            headers={"Retry-After": "1"},
        )
    return stored.status, stored.body


# A change that answers a status and a JSON body; it runs inside the claiming transaction.
Change = Callable[[], Awaitable[tuple[int, bytes]]]


async def answer_once(
    conn: Connection, scope: Scope, key: Claim | None, ttl_seconds: int, change: Change
) -> tuple[int, bytes, bool]:
    """Make the change once per key: (status, body, replayed).

    The key is claimed in the transaction the change runs in (its own transaction becomes a
    savepoint of this one), and its answer stored there too, so a retry after a lost answer
    finds the answer, and a change that fails leaves the key free. Failures are not stored.
    """
    if key is None:
        return *await change(), False
    async with conn.transaction():
        if not await claim(conn, scope, [key], ttl_seconds):
            stored = (await replays(conn, scope, [key]))[key.key]
            return *stored_answer(key, stored), True
        status, body = await change()
        await store(conn, scope, [(key, body)], status)
    return status, body, False


async def fresh_answer(
    db: Executor, series: Scope, claim: Claim, ttl_seconds: int
) -> Replayed | None:
    """The unexpired answer stored for this key, read without claiming the key."""
    row = await db.fetchrow(
        SELECT_FRESH_ANSWER, series.tenant_id, series.id, claim.key, ttl_seconds
    )
    return None if row is None else Replayed(row["request_hash"], row["status_code"], row["body"])


async def prune(pool: asyncpg.Pool, ttl_seconds: int) -> int:
    status: str = await pool.execute(PRUNE_EXPIRED, ttl_seconds)
    return int(status.split()[-1])
