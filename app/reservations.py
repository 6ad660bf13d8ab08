"""Reservations: numbers held for a caller until it confirms or releases them, or they expire.

A reservation's numbers are taken by the issuing engine like any others (``Request.hold``), so
every check that applies to an issue applies to them, and gapless ones ride the group commit. A
series with a ledger holds them there with the status ``reserved``: the ledger's unique
constraints cover them, and the gap report counts them as accounted for. The reservation row
(migrations/0005_reservations.sql) is written in the same transaction as the numbers.

Settling a reservation locks its row (``FOR UPDATE``) first, so confirm, release and expiry of
one reservation happen once, in whichever order they arrive; a second confirm or release answers
what the first one did. Each outcome:

- confirm: the numbers become ``issued``, with the document reference given now or at reserve.
- release or expiry of a gapless reservation whose last value is still its counter's last value
  (nothing was taken after it): the counter goes back to the value before its first, and its
  ledger rows go, so the next request gets the same values again. This is decided by one
  ``UPDATE`` of the counter row that holds the series row ``FOR KEY SHARE``, as issuing does: it
  waits for an issue or a change of the series in flight and then sees what it committed, so it
  never gives back a value that was taken after the reservation's.
- any other release or expiry: where there is a ledger, the numbers stay in it, ``voided`` with
  the reason ``released`` or ``expired``; in sequence and cached mode a released value is never
  handed out again.

The database is the clock: ``expires_at`` is ``now()`` plus the time to live, set by the
statement that records the reservation, and a reservation has expired when the database's
``now()`` has passed it. Every process runs the sweeper (``expire_lapsed``), which claims lapsed
reservations one per transaction with ``FOR UPDATE SKIP LOCKED``, so several processes share the
work and none waits for another; a restart loses nothing, since lapsed rows stay until one is
swept. A confirm or release that finds its reservation lapsed but not yet swept expires it
itself. Settled reservations are kept as long as idempotency keys are, then pruned.
"""

import dataclasses
import uuid
from typing import Any

import asyncpg

from app import chain, metrics
from app.database import Connection, Executor
from app.definition import CounterKey, Series
from app.issuing.issued import Hold, Issued, Reservation
from app.problems import (
    ReservationConfirmed,
    ReservationExpired,
    ReservationNotFound,
    ReservationReleased,
)
from app.schemas import ReservationOut

COLUMNS = (
    'id, status, period, variables, date, "values", numbers, last_value, document_ref, '
    "reserved_at, expires_at, settled_at"
)
# $10 is the time to live in seconds: the database's clock sets the expiry.
INSERT_RESERVATION = """
INSERT INTO reservations (id, series_id, period, variables, date, "values", numbers, last_value,
                          document_ref, reserved_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $11, now() + make_interval(secs => $10))
"""
SELECT_EXPIRY = "SELECT id, expires_at FROM reservations WHERE id = ANY($1::uuid[])"
SELECT_RESERVATION = f"SELECT {COLUMNS} FROM reservations WHERE id = $1 AND series_id = $2"
# The reservation, locked for settling, and whether the database's clock has passed its expiry.
LOCK_RESERVATION = f"""
SELECT {COLUMNS}, expires_at <= now() AS lapsed
FROM reservations WHERE id = $1 AND series_id = $2
FOR UPDATE
"""
# One lapsed reservation no other sweeper holds, the highest values first: releasing the top of
# a counter first lets the reservations below it be given back too.
CLAIM_LAPSED = f"""
SELECT r.series_id, s.mode, {", ".join("r." + c.strip() for c in COLUMNS.split(","))}
FROM reservations AS r JOIN series AS s ON s.id = r.series_id
WHERE r.status = 'reserved' AND r.expires_at <= now()
ORDER BY r.last_value DESC
LIMIT 1
FOR UPDATE OF r SKIP LOCKED
"""
# Gives the values $5 (the reservation's first) to $4 (its last) back to the counter, if $4 is
# still its last value. Holds the series row FOR KEY SHARE, as issuing does (app.issuing.counters):
# a change of the series' definition in flight finishes first.
GIVE_BACK = """
WITH definition AS (SELECT step FROM series WHERE id = $1 FOR KEY SHARE)
UPDATE counters AS c SET last_value = $5::bigint - definition.step
FROM definition
WHERE c.series_id = $1 AND c.period = $2 AND c.variables = $3 AND c.last_value = $4
RETURNING c.last_value
"""
# $4 are the reservation's values; only rows still reserved are touched.
DROP_HELD = """
DELETE FROM numbers
WHERE series_id = $1 AND period = $2 AND variables = $3 AND value = ANY($4::bigint[])
  AND status = 'reserved'
RETURNING value
"""
VOID_HELD = """
UPDATE numbers SET status = 'voided', void_reason = $5, voided_at = now()
WHERE series_id = $1 AND period = $2 AND variables = $3 AND value = ANY($4::bigint[])
  AND status = 'reserved'
RETURNING *
"""
ISSUE_HELD = """
UPDATE numbers SET status = 'issued', document_ref = $5
WHERE series_id = $1 AND period = $2 AND variables = $3 AND value = ANY($4::bigint[])
  AND status = 'reserved'
RETURNING *
"""
SETTLE = f"""
UPDATE reservations SET status = $2, settled_at = now(), document_ref = $3
WHERE id = $1
RETURNING {COLUMNS}
"""
PRUNE_SETTLED = "DELETE FROM reservations WHERE settled_at < now() - make_interval(secs => $1)"

ENDED = {"released": ReservationReleased, "expired": ReservationExpired}


async def hold(
    conn: Connection, series: Series, counter: CounterKey, held: list[tuple[Hold, Issued]]
) -> list[Issued]:
    """Record a reservation for each of ``held``, in the caller's transaction; return each
    ``Issued`` with its reservation. The ledger rows are the caller's to record."""
    ids = [uuid.uuid4() for _ in held]
    await conn.executemany(
        INSERT_RESERVATION,
        [
            (
                reservation_id,
                series.id,
                counter.period,
                counter.variables,
                issued.date,
                issued.values,
                issued.numbers,
                max(issued.values),
                issued.document_ref,
                terms.ttl_seconds,
                issued.issued_at,
            )
            for reservation_id, (terms, issued) in zip(ids, held, strict=True)
        ],
    )
    expiry = {row["id"]: row["expires_at"] for row in await conn.fetch(SELECT_EXPIRY, ids)}
    return [
        dataclasses.replace(issued, reservation=Reservation(rid, expiry[rid]))
        for rid, (_, issued) in zip(ids, held, strict=True)
    ]


def reserved(issued: Issued) -> ReservationOut:
    """The answer to a reservation just made."""
    assert issued.reservation is not None
    return ReservationOut(
        id=issued.reservation.id,
        series=issued.series,
        status="reserved",
        period=issued.period,
        date=issued.date,
        count=len(issued.values),
        numbers=issued.numbers,
        values=issued.values,
        document_ref=issued.document_ref,
        reserved_at=issued.issued_at,
        expires_at=issued.reservation.expires_at,
        settled_at=None,
    )


def _out(series: Series, row: asyncpg.Record) -> ReservationOut:
    return ReservationOut(
        series=series.name,
        count=len(row["values"]),
        **{k: row[k] for k in ReservationOut.model_fields if k not in ("series", "count")},
    )


async def find(conn: Executor, series: Series, reservation_id: uuid.UUID) -> ReservationOut:
    row = await conn.fetchrow(SELECT_RESERVATION, reservation_id, series.id)
    if row is None:
        raise _not_found(series, reservation_id)
    return _out(series, row)


async def confirm(
    pool: asyncpg.Pool, series: Series, reservation_id: uuid.UUID, document_ref: str | None
) -> ReservationOut:
    """Issue the reservation's numbers (counted as issued once committed); confirmed again,
    answer the same. A released or expired one is a 409 (an expiry that the sweeper has not
    reached yet happens now)."""
    series.check_document_ref(document_ref)
    confirmed_now = False
    async with pool.acquire() as conn:
        async with conn.transaction():
            row = await _locked(conn, series, reservation_id)
            if row["status"] == "reserved" and not row["lapsed"]:
                ref = document_ref or row["document_ref"]
                if series.mode == "gapless":
                    await chain.lock(conn, series.id, _counter(row))
                rows = await conn.fetch(ISSUE_HELD, *_held(series.id, row), ref)
                await _chain(conn, series.id, series.mode, row, "confirmed", rows)
                row = await _mark(conn, row, "confirmed", ref)
                confirmed_now = True
            elif row["status"] == "reserved":
                row = await _settle(conn, series.id, series.mode, row, "expired")
        if confirmed_now:
            metrics.count_issued(series, len(row["values"]))
        if row["status"] == "confirmed":
            return _out(series, row)
        raise ENDED[row["status"]](
            f"Reservation {reservation_id} of series {series.name!r} was {row['status']} at "
            f"{row['settled_at'].isoformat()}; its numbers are no longer held."
        )


async def release(pool: asyncpg.Pool, series: Series, reservation_id: uuid.UUID) -> ReservationOut:
    """Let the reservation's numbers go; released or expired already, answer as it is. A
    confirmed one is a 409: its numbers are issued."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, series, reservation_id)
        if row["status"] == "confirmed":
            raise ReservationConfirmed(
                f"Reservation {reservation_id} of series {series.name!r} was confirmed; void "
                "its numbers to cancel them."
            )
        if row["status"] == "reserved":
            outcome = "expired" if row["lapsed"] else "released"
            row = await _settle(conn, series.id, series.mode, row, outcome)
        return _out(series, row)


async def expire_lapsed(pool: asyncpg.Pool) -> int:
    """Expire every reservation whose time has passed, one per transaction; return how many.

    One per transaction: two sweepers never hold counter rows in different orders."""
    expired = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(CLAIM_LAPSED)
            if row is None:
                return expired
            await _settle(conn, row["series_id"], row["mode"], row, "expired")
        expired += 1


async def prune(pool: asyncpg.Pool, keep_seconds: int) -> int:
    """Forget reservations settled more than ``keep_seconds`` ago."""
    status: str = await pool.execute(PRUNE_SETTLED, keep_seconds)
    return int(status.split()[-1])


async def _locked(conn: Connection, series: Series, reservation_id: uuid.UUID) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow(LOCK_RESERVATION, reservation_id, series.id)
    if row is None:
        raise _not_found(series, reservation_id)
    return row


def _not_found(series: Series, reservation_id: uuid.UUID) -> ReservationNotFound:
    return ReservationNotFound(f"Series {series.name!r} has no reservation {reservation_id}.")


def _held(series_id: int, row: asyncpg.Record) -> tuple[Any, ...]:
    """The ledger rows a reservation holds, as the $1 to $4 of the statements that settle them."""
    return series_id, row["period"], row["variables"], list(row["values"])


async def _settle(
    conn: Connection, series_id: int, mode: str, row: asyncpg.Record, outcome: str
) -> asyncpg.Record:
    """Release or expire a reservation whose row this transaction holds locked. Its ledger rows
    are settled whether or not the series keeps a ledger now: it may have been turned off since
    they were recorded. The counter's row is locked before the ledger rows, as issuing locks
    them: by the statement that gives the values back, or else by ``chain.lock``."""
    values: list[int] = list(row["values"])
    given_back = mode == "gapless" and (
        await conn.fetchval(
            GIVE_BACK, series_id, row["period"], row["variables"], row["last_value"], min(values)
        )
        is not None
    )
    if given_back:
        dropped = await conn.fetch(DROP_HELD, *_held(series_id, row))
        await _chain(conn, series_id, mode, row, outcome, dropped)
    else:
        if mode == "gapless":
            await chain.lock(conn, series_id, _counter(row))
        voided = await conn.fetch(VOID_HELD, *_held(series_id, row), outcome)
        await _chain(conn, series_id, mode, row, outcome, voided)
    return await _mark(conn, row, outcome, row["document_ref"])


def _counter(row: asyncpg.Record) -> CounterKey:
    return CounterKey(row["period"], row["variables"])


async def _chain(
    conn: Connection,
    series_id: int,
    mode: str,
    reservation: asyncpg.Record,
    kind: str,
    changed: list[asyncpg.Record],
) -> None:
    """Append an event ``kind`` per ledger row a settlement left (or removed: a row of its value
    alone) to the counter's chain, in a gapless series (app.chain). The counter's row is locked
    already: by the statement that gave the values back, or by the caller, before the rows."""
    if mode != "gapless" or not changed:
        return
    events = [
        chain.event(kind, row=dict(r)) if len(r) > 1 else chain.event(kind, value=r["value"])
        for r in sorted(changed, key=lambda r: int(r["value"]))
    ]
    await chain.append(conn, series_id, _counter(reservation), events)


async def _mark(
    conn: Connection, row: asyncpg.Record, status: str, document_ref: str | None
) -> asyncpg.Record:
    """Record how a reservation this transaction holds locked was settled; its row as now."""
    settled: asyncpg.Record | None = await conn.fetchrow(SETTLE, row["id"], status, document_ref)
    assert settled is not None  # the row is locked: nobody deleted it meanwhile
    return settled
