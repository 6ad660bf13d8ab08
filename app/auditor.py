"""One ZIP with everything an auditor needs to check one period of a gapless series.

Its files, all read in one repeatable-read snapshot, so that they agree with each other whatever
is issued meanwhile:

- ``ledger.csv``: the period's ledger, as ``GET /series/{name}/numbers?format=csv`` gives it,
  each row with the ``seq`` and hash of the last event of its counter's chain that set it;
- ``chain.csv``: every event of the period's counters, with the content that was hashed;
- ``voids.csv``: the voided numbers with their reasons (the ledger's rows with status voided);
- ``gaps.json``: the gap report of each counter of the period;
- ``configuration.json``: the series as it is now and every change of its configuration, from the
  audit trail;
- ``head.json``: each counter's chain head (its number of events and last hash) and the result of
  verifying the chain when the ZIP was made.

docs/ledger-chain.md shows how to verify ``chain.csv``, ``ledger.csv`` and ``head.json`` offline.
The ZIP is built in memory before the first byte is sent, within the process's export slots (see
``app.exports``): the connection is held only for the reads, never while the files are
compressed or the client reads them.
"""

import csv
import datetime
import io
import json
import zipfile
from typing import Final

import asyncpg
from fastapi import Response

from app import audit, chain, ledger
from app.database import Connection, acquire_for_snapshot
from app.definition import CounterKey, Series
from app.exports import ExportSlots
from app.problems import NotChained
from app.schemas import ChainReport

# Every event of the counters of period $2, in chain order per counter.
SELECT_PERIOD_EVENTS = """
SELECT c.variables, e.seq, e.kind, e.value, e.content, e.hash
FROM ledger_events AS e JOIN counters AS c ON c.id = e.counter_id
WHERE c.series_id = $1 AND c.period = $2
ORDER BY c.variables, e.seq
"""
ZIP = "application/zip"
# Every read of a verification or a ZIP sees the same committed state.
SNAPSHOT: Final = "repeatable_read"
CHAIN_COLUMNS = ("period", "variables", "seq", "kind", "value", "content", "hash")


def chained(series: Series) -> Series:
    """The series, if it chains its ledger; a 409 otherwise."""
    if series.mode != "gapless":
        raise NotChained(
            f"Series {series.name!r} is a {series.mode} series: only gapless series chain their "
            "ledger."
        )
    return series


def zip_response(body: bytes, filename: str) -> Response:
    return Response(
        body, media_type=ZIP, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


async def _report(
    conn: Connection, series: Series, period: str, variables: str | None
) -> ChainReport:
    counters = await chain.verify(conn, series.id, period, variables)
    return ChainReport(
        series=series.name,
        period=period,
        intact=all(c.intact for c in counters),
        counters=counters,
    )


async def verify(
    pool: asyncpg.Pool, series: Series, period: str, variables: str | None
) -> ChainReport:
    """The chain of each counter of ``period`` (or of one), verified in one snapshot."""
    async with (
        acquire_for_snapshot(pool) as conn,
        conn.transaction(isolation=SNAPSHOT, readonly=True),
    ):
        return await _report(conn, series, period, variables)


async def _csv(conn: Connection, series: Series, period: str, status: str | None) -> str:
    chunks = await ledger.csv_chunks(conn, series, period=period, variables=None, status=status)
    return "".join([chunk async for chunk in chunks])


def _json(document: object) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


async def archive(
    pool: asyncpg.Pool,
    slots: ExportSlots,
    series: Series,
    period: str,
    now: datetime.datetime,
) -> bytes:
    """The ZIP of ``period``, within this process's export slots; the connection is given back
    before the files are compressed."""
    slots.take()
    try:
        async with (
            acquire_for_snapshot(pool) as conn,
            conn.transaction(isolation=SNAPSHOT, readonly=True),
        ):
            files = await _files(conn, series, period, now)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
            for name, text in files.items():
                bundle.writestr(name, text)
        return buffer.getvalue()
    finally:
        slots.give_back()


async def _files(
    conn: Connection, series: Series, period: str, now: datetime.datetime
) -> dict[str, str]:
    report = await _report(conn, series, period, None)
    events = io.StringIO()
    writer = csv.writer(events)
    writer.writerow(CHAIN_COLUMNS)
    for row in await conn.fetch(SELECT_PERIOD_EVENTS, series.id, period):
        writer.writerow(
            (
                period,
                row["variables"],
                row["seq"],
                row["kind"],
                row["value"],
                row["content"],
                row["hash"].hex(),
            )
        )
    counters = report.counters
    gaps = [await ledger.gaps(conn, series, CounterKey(period, c.variables)) for c in counters]
    history = await audit.series_history(conn, series.tenant_id, series.name)
    return {
        "ledger.csv": await _csv(conn, series, period, None),
        "chain.csv": events.getvalue(),
        "voids.csv": await _csv(conn, series, period, "voided"),
        "gaps.json": _json([g.model_dump(mode="json") for g in gaps]),
        "configuration.json": _json(
            {
                "series": series.to_out().model_dump(mode="json"),
                "history": [entry.model_dump(mode="json") for entry in history],
            }
        ),
        "head.json": _json(
            {
                "series": series.name,
                "period": period,
                "made_at": now.isoformat(),
                "algorithm": "hash = SHA-256(previous hash || UTF-8 content); genesis 32 zero "
                "bytes",
                "counters": [
                    {"variables": c.variables, "events": c.events, "head": c.head} for c in counters
                ],
                "verification": report.model_dump(mode="json"),
            }
        ),
    }
