"""Idempotent retries: the same Idempotency-Key never costs a second number.

A key is claimed by inserting its row inside the transaction that issues the numbers, and its
answer is written in that same transaction. So a claim and its answer commit together or not at
all: a crash cannot leave a key that owns no answer, nor an answer without its numbers. A second
request with the same key, on any process, waits on the row until the first transaction ends,
then finds the stored answer and replays it.
"""

import hashlib
import json
from typing import Any

import asyncpg

from app.database import Connection, Executor
from app.definition import Series
from app.issued import Claim, Replayed

KEY_PATTERN = r"^[\x20-\x7e]{1,255}$"  # printable ASCII
REPLAYED_HEADER = "Idempotent-Replayed"
# Documents the header on the success response of the routes that take an Idempotency-Key.
REPLAYED_RESPONSE: dict[int | str, dict[str, Any]] = {
    201: {
        "headers": {
            REPLAYED_HEADER: {
                "description": "`true` when this is the stored answer to an earlier request "
                "with the same Idempotency-Key; no new number was issued.",
                "schema": {"type": "string", "enum": ["true"]},
            }
        }
    }
}

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
UPDATE idempotency_keys AS k SET status_code = 201, body = u.body
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


def request_hash(endpoint: str, body: dict[str, Any]) -> bytes:
    """A fingerprint of what was asked, insensitive to JSON spacing and key order."""
    canonical = json.dumps([endpoint, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).digest()


async def claim(
    conn: Connection, series: Series, claims: list[Claim], ttl_seconds: int
) -> set[str]:
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


async def store(conn: Connection, series: Series, answers: list[tuple[Claim, bytes]]) -> None:
    if answers:
        await conn.execute(
            STORE_ANSWERS,
            series.tenant_id,
            series.id,
            [c.key for c, _ in answers],
            [body for _, body in answers],
        )


async def replays(conn: Connection, series: Series, claims: list[Claim]) -> dict[str, Replayed]:
    """The stored answers of keys this transaction could not claim."""
    rows = await conn.fetch(SELECT_ANSWERS, series.tenant_id, series.id, [c.key for c in claims])
    return {
        row["key"]: Replayed(row["request_hash"], row["status_code"], row["body"]) for row in rows
    }


async def fresh_answer(
    db: Executor, series: Series, claim: Claim, ttl_seconds: int
) -> Replayed | None:
    """The unexpired answer stored for this key, read without claiming the key."""
    row = await db.fetchrow(
        SELECT_FRESH_ANSWER, series.tenant_id, series.id, claim.key, ttl_seconds
    )
    return None if row is None else Replayed(row["request_hash"], row["status_code"], row["body"])


async def prune(pool: asyncpg.Pool, ttl_seconds: int) -> int:
    status: str = await pool.execute(PRUNE_EXPIRED, ttl_seconds)
    return int(status.split()[-1])
