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
The ZIP is built before the first byte is sent, within the process's export slots (see
``app.exports``): the connection is held only for the reads, never while the files are
compressed or the client reads them.

Memory stays bounded whatever the period's size: rows are read a page at a time (the events
through a cursor) and written to the files as they come, and every file, the ZIP too, is kept in
memory up to ``SPOOL_BYTES`` and on disk beyond (a temporary file, gone once the answer is sent
or abandoned). Compressing runs in a worker thread, not in the event loop that issues numbers.
"""

import asyncio
import contextlib
import csv
import datetime
import json
import tempfile
import zipfile
from collections.abc import Iterator
from typing import IO, Final

import asyncpg
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

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
# What each file, and the ZIP, keeps in memory before it goes on in a temporary file on disk.
SPOOL_BYTES = 8 * 2**20
# Events read per round trip of the cursor, and bytes per chunk of the answer.
CURSOR_ROWS = 1000
CHUNK_BYTES = 2**16


def chained(series: Series) -> Series:
    """The series, if it chains its ledger; a 409 otherwise."""
    if series.mode != "gapless":
        raise NotChained(
            f"Series {series.name!r} is a {series.mode} series: only gapless series chain their "
            "ledger."
        )
    return series


def zip_response(bundle: IO[bytes], filename: str) -> StreamingResponse:
    """The ZIP ``archive`` made, sent in chunks; its file is closed (and removed) once the answer
    is sent or abandoned."""
    size = bundle.seek(0, 2)
    bundle.seek(0)

    def chunks() -> Iterator[bytes]:  # a plain iterator: Starlette reads it in a thread
        while chunk := bundle.read(CHUNK_BYTES):
            yield chunk

    return StreamingResponse(
        chunks(),
        media_type=ZIP,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(size),
        },
        background=BackgroundTask(bundle.close),
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


async def _write_csv(
    conn: Connection, series: Series, period: str, status: str | None, out: IO[str]
) -> None:
    chunks = await ledger.csv_chunks(conn, series, period=period, variables=None, status=status)
    async for chunk in chunks:
        out.write(chunk)


async def _write_events(conn: Connection, series: Series, period: str, out: IO[str]) -> None:
    writer = csv.writer(out)
    writer.writerow(CHAIN_COLUMNS)
    rows = conn.cursor(SELECT_PERIOD_EVENTS, series.id, period, prefetch=CURSOR_ROWS)
    async for row in rows:
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


def _json(document: object) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


async def archive(
    pool: asyncpg.Pool,
    slots: ExportSlots,
    series: Series,
    period: str,
    now: datetime.datetime,
) -> IO[bytes]:
    """The ZIP of ``period`` as a file (see above), within this process's export slots; the
    connection is given back before the files are compressed. The caller closes it
    (``zip_response`` does)."""
    slots.take()
    try:
        with contextlib.ExitStack() as opened:  # the files, closed however this ends
            async with (
                acquire_for_snapshot(pool) as conn,
                conn.transaction(isolation=SNAPSHOT, readonly=True),
            ):
                files = await _files(conn, series, period, now, opened)
            return await asyncio.to_thread(_compress, files)
    finally:
        slots.give_back()


def _compress(files: dict[str, IO[str]]) -> IO[bytes]:
    # Not a context manager: the caller owns the file it returns (zip_response closes it).
    bundle: IO[bytes] = tempfile.SpooledTemporaryFile(SPOOL_BYTES)  # noqa: SIM115
    try:
        with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, file in files.items():
                file.seek(0)
                with archive.open(name, "w") as member:
                    while chunk := file.read(CHUNK_BYTES):
                        member.write(chunk.encode())
    except BaseException:
        bundle.close()
        raise
    return bundle


async def _files(
    conn: Connection,
    series: Series,
    period: str,
    now: datetime.datetime,
    opened: contextlib.ExitStack,
) -> dict[str, IO[str]]:
    """The ZIP's files in its order, written in the snapshot of ``conn``'s transaction; each is
    closed with ``opened``."""

    def new(name: str) -> IO[str]:
        spooled = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by ``opened``)
            SPOOL_BYTES, "w+", encoding="utf-8", newline=""
        )
        files[name] = opened.enter_context(spooled)
        return files[name]

    files: dict[str, IO[str]] = {}
    report = await _report(conn, series, period, None)
    await _write_csv(conn, series, period, None, new("ledger.csv"))
    await _write_events(conn, series, period, new("chain.csv"))
    await _write_csv(conn, series, period, "voided", new("voids.csv"))
    counters = report.counters
    gaps = [await ledger.gaps(conn, series, CounterKey(period, c.variables)) for c in counters]
    history = await audit.series_history(conn, series.tenant_id, series.name)
    new("gaps.json").write(_json([g.model_dump(mode="json") for g in gaps]))
    new("configuration.json").write(
        _json(
            {
                "series": series.to_out().model_dump(mode="json"),
                "history": [entry.model_dump(mode="json") for entry in history],
            }
        )
    )
    new("head.json").write(
        _json(
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
        )
    )
    return files
