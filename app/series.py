"""Series definitions: their SQL, their rules, and the in-memory form the issuing code uses."""

import datetime
import re
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import ValidationError

from app import audit, sequences
from app.database import Connection, Executor
from app.errors import SeriesExists, SeriesInUse, SeriesNotFound, field_error, invalid_fields
from app.formatting import Template, TemplateError, check_template, parse_template
from app.periods import Reset
from app.schemas import (
    MAX_BIGINT,
    SERIES_NAME_PATTERN,
    Mode,
    PeriodValue,
    SeriesCreate,
    SeriesFields,
    SeriesOut,
    SeriesUpdate,
)

# Fields whose change after the first number would make issued numbers ambiguous or repeatable.
STRUCTURAL_FIELDS = ("mode", "reset", "start", "step", "fiscal_year_start")

# Sent in the transaction that changes a series, so other processes drop their cached copy.
SERIES_CHANNEL = "docnum_series"

COLUMNS = """id, tenant_id, name, format, mode, reset, start, step, max_value, timezone,
    fiscal_year_start, block_size, ledger, description, created_at, updated_at, archived_at"""

INSERT_SERIES = f"""
INSERT INTO series (tenant_id, name, format, mode, reset, start, step, max_value, timezone,
                    fiscal_year_start, block_size, ledger, description)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING {COLUMNS}
"""
SELECT_SERIES = f"SELECT {COLUMNS} FROM series WHERE tenant_id = $1 AND name = $2"
# Taken before a change so two admins cannot interleave a check and an update.
LOCK_SERIES = SELECT_SERIES + " FOR UPDATE"
LIST_SERIES = f"""
SELECT {COLUMNS} FROM series
WHERE tenant_id = $1 AND name > $2 AND (archived_at IS NULL OR $3)
ORDER BY name LIMIT $4
"""
UPDATE_SERIES = f"""
UPDATE series SET format = $2, mode = $3, reset = $4, start = $5, step = $6, max_value = $7,
    timezone = $8, fiscal_year_start = $9, block_size = $10, ledger = $11, description = $12,
    updated_at = now()
WHERE id = $1
RETURNING {COLUMNS}
"""
ARCHIVE_SERIES = f"""
UPDATE series SET archived_at = now(), updated_at = now()
WHERE id = $1 AND archived_at IS NULL
RETURNING {COLUMNS}
"""
HAS_COUNTERS = "SELECT EXISTS (SELECT 1 FROM counters WHERE series_id = $1)"
# A counter's last value, $2 being the series' mode: for sequence mode it lives in the PostgreSQL
# sequence that the counter row names.
LAST_VALUE = """CASE WHEN $2 = 'sequence'
            THEN pg_sequence_last_value(('docnum_seq_' || id)::regclass)
            ELSE last_value END"""
SELECT_PERIODS = f"""
SELECT period, {LAST_VALUE} AS last_value
FROM counters WHERE series_id = $1 ORDER BY period
"""
HIGHEST_VALUE = f"SELECT max({LAST_VALUE}) FROM counters WHERE series_id = $1"
NOTIFY_CHANGE = "SELECT pg_notify($1, $2)"


@dataclass(frozen=True, slots=True)
class Series:
    """A series as the issuing code sees it: a database row plus its template, parsed once."""

    id: int
    tenant_id: int
    name: str
    format: str
    mode: Mode
    reset: Reset
    start: int
    step: int
    max_value: int | None
    timezone: str
    fiscal_year_start: int
    block_size: int
    ledger: bool
    description: str
    created_at: datetime.datetime
    updated_at: datetime.datetime
    archived_at: datetime.datetime | None
    template: Template

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> "Series":
        return cls(**dict(row), template=parse_template(row["format"]))

    @property
    def highest_value(self) -> int:
        """The last value the series may issue: max_value (or the bigint limit) on the step grid."""
        ceiling = MAX_BIGINT if self.max_value is None else self.max_value
        return self.start + (ceiling - self.start) // self.step * self.step

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SeriesFields.model_fields}

    def to_out(self, periods: list[PeriodValue] | None = None) -> SeriesOut:
        return SeriesOut(
            **{name: getattr(self, name) for name in SeriesOut.model_fields if hasattr(self, name)},
            archived=self.archived_at is not None,
            periods=periods,
        )


def checked_fields(fields: SeriesFields, name: str) -> SeriesFields:
    """Apply the rules that span fields; return the fields with the ledger default resolved.

    The template must tell the periods apart (a yearly series needs a year in its numbers),
    otherwise two periods would render the same number.
    """
    if fields.max_value is not None and fields.max_value < fields.start:
        raise field_error("max_value", "must be at least start")
    if fields.mode == "gapless" and fields.ledger is False:
        raise field_error("ledger", "a gapless series always keeps its ledger")
    try:
        check_template(
            parse_template(fields.format),
            reset=fields.reset,
            fiscal_year_start=fields.fiscal_year_start,
            series=name,
            max_value=fields.max_value,
        )
    except TemplateError as error:
        raise field_error("format", str(error)) from None
    ledger = fields.mode == "gapless" if fields.ledger is None else fields.ledger
    return fields.model_copy(update={"ledger": ledger})


async def create(conn: Connection, tenant_id: int, body: SeriesCreate, *, actor: str) -> Series:
    fields = checked_fields(body, body.name)
    async with conn.transaction():
        row = await conn.fetchrow(
            INSERT_SERIES,
            tenant_id,
            body.name,
            fields.format,
            fields.mode,
            fields.reset,
            fields.start,
            fields.step,
            fields.max_value,
            fields.timezone,
            fields.fiscal_year_start,
            fields.block_size,
            fields.ledger,
            fields.description,
        )
        if row is None:
            raise SeriesExists(f"A series named {body.name!r} already exists.")
        series = Series.from_row(row)
        await audit.record(
            conn,
            tenant_id=tenant_id,
            actor=actor,
            action="series.created",
            series=series.name,
            details=series.fields(),
        )
    return series


def _may_exist(name: str) -> bool:
    """A name outside the pattern was never created, so it is not sent to the database at all
    (where text such as a NUL character would fail instead of finding nothing)."""
    return re.fullmatch(SERIES_NAME_PATTERN, name) is not None


async def fetch(conn: Executor, tenant_id: int, name: str) -> Series:
    row = await conn.fetchrow(SELECT_SERIES, tenant_id, name) if _may_exist(name) else None
    if row is None:
        raise SeriesNotFound(f"No series named {name!r}.")
    return Series.from_row(row)


async def periods(conn: Executor, series: Series) -> list[PeriodValue]:
    rows = await conn.fetch(SELECT_PERIODS, series.id, series.mode)
    return [PeriodValue(period=r["period"], last_value=r["last_value"]) for r in rows]


async def page(
    conn: Executor,
    tenant_id: int,
    *,
    after: str,
    limit: int,
    include_archived: bool,
) -> list[Series]:
    rows = await conn.fetch(LIST_SERIES, tenant_id, after, include_archived, limit)
    return [Series.from_row(row) for row in rows]


async def update(
    conn: Connection, tenant_id: int, name: str, patch: SeriesUpdate, *, actor: str
) -> Series:
    changes = patch.model_dump(exclude_unset=True)
    if changes.get("mode") == "gapless" and changes.get("ledger") is None:
        changes["ledger"] = True  # becoming gapless turns the ledger on, as creating one does
    async with conn.transaction():
        current = Series.from_row(await _locked(conn, tenant_id, name))
        old = current.fields()
        try:
            merged = SeriesFields.model_validate({**old, **changes})
        except ValidationError as error:  # an explicit null for a field that needs a value
            raise invalid_fields(error.errors()) from None
        new = checked_fields(merged, name)
        changed = {k: v for k, v in new.model_dump().items() if old[k] != v}
        structural = sorted(set(changed) & set(STRUCTURAL_FIELDS))
        if structural and await conn.fetchval(HAS_COUNTERS, current.id):
            raise SeriesInUse(
                f"{', '.join(structural)} cannot change once numbers were issued; "
                "create a new series instead."
            )
        if "max_value" in changed and new.max_value is not None:
            highest = await conn.fetchval(HIGHEST_VALUE, current.id, current.mode)
            if highest is not None and new.max_value < highest:
                raise field_error("max_value", f"{highest} was already issued or reserved")
        if not changed:
            return current
        row = await conn.fetchrow(UPDATE_SERIES, current.id, *new.model_dump().values())
        assert row is not None
        changed_series = Series.from_row(row)
        if changed_series.mode == "sequence" and "max_value" in changed:
            await sequences.set_ceiling(conn, changed_series)
        await audit.record(
            conn,
            tenant_id=tenant_id,
            actor=actor,
            action="series.changed",
            series=name,
            details={k: {"old": old[k], "new": v} for k, v in changed.items()},
        )
        await conn.execute(NOTIFY_CHANGE, SERIES_CHANNEL, f"{tenant_id}:{name}")
    return changed_series


async def archive(conn: Connection, tenant_id: int, name: str, *, actor: str) -> None:
    """Stop issuing from a series; what it issued stays. Archiving twice changes nothing."""
    async with conn.transaction():
        current = await _locked(conn, tenant_id, name)
        if await conn.fetchrow(ARCHIVE_SERIES, current["id"]) is None:
            return
        await audit.record(
            conn, tenant_id=tenant_id, actor=actor, action="series.archived", series=name
        )
        await conn.execute(NOTIFY_CHANGE, SERIES_CHANNEL, f"{tenant_id}:{name}")


async def _locked(conn: Connection, tenant_id: int, name: str) -> asyncpg.Record:
    row: asyncpg.Record | None = (
        await conn.fetchrow(LOCK_SERIES, tenant_id, name) if _may_exist(name) else None
    )
    if row is None:
        raise SeriesNotFound(f"No series named {name!r}.")
    return row
