"""Series administration: the SQL of series and their format history, and the rules of a change.

Invariants, and why they hold:

- **No rendered number twice over a series' life.** A new format is accepted only when nothing it
  can render could be rendered, for another counter or another value, by any format the series
  ever had (``find_collision``, which refuses when unsure). Formats are never forgotten: documents
  dated before a change keep rendering with the old one, and a number issued by a format that was
  replaced still exists.
- **Structural fields change only before the first number.** Once a counter exists, changing
  mode, reset, start, step, fiscal_year_start or shared_counter could hand a value out again or
  under another key. The check and the change run under the series row's ``FOR UPDATE`` lock, and
  every statement that creates or advances a counter holds the row ``FOR KEY SHARE`` and checks the
  definition's version (``app.definition``), so a counter cannot appear between the check and the
  change, nor be advanced afterwards by a request that read the old definition.
- **Rules change at any time.** date_order, closed_through, the number rules and warn_remaining
  bound what is issued next, never what was, so they are not structural. A gapless counter keeps
  its last date whatever date_order says, so a series made strict later orders from the dates it
  already issued.
- **A conditional change applies only to the version it was made from.** The series' ``ETag`` is
  its version (``"v7"``). ``update`` compares an ``If-Match`` with the version read under the row's
  ``FOR UPDATE`` lock, so no other change can commit between the comparison and the write: two
  administrators sending the same ETag get one change and one 412, never a silent overwrite.
- **A closed period only reopens with a reason.** ``closed_through`` moves forward with any
  change; moving it back (or clearing it) needs ``reopen_reason``, and the audit entry of the
  change says ``series.closed`` or ``series.reopened`` (with the reason), under the same lock.
- **Date order needs a gapless series.** Only gapless issuing advances the counter row, in the
  statement that checks the last date; the other modes hand out values without it, so
  ``date_order: strict`` is refused for them (and they cannot become one while it is on).
- **Archiving and restoring** each bump the version, are audited and notify every process in the
  transaction that makes them, like any change.
"""

import datetime
import re
from typing import Any

import asyncpg
from pydantic import ValidationError

from app import audit
from app.database import Connection, Executor
from app.definition import FIELD_NAMES, Format, Series
from app.formatting import TemplateError, check_template, find_collision, parse_template
from app.issuing import sequences
from app.problems import (
    FormatConflict,
    PreconditionFailed,
    SeriesExists,
    SeriesInUse,
    SeriesNotFound,
    field_error,
    invalid_fields,
)
from app.rules import number_rules
from app.schemas import SERIES_NAME_PATTERN, CounterValue, SeriesCreate, SeriesFields, SeriesUpdate

# Fields whose change after the first number would make issued numbers ambiguous or repeatable.
STRUCTURAL_FIELDS = ("mode", "reset", "start", "step", "fiscal_year_start", "shared_counter")

# Sent in the transaction that changes a series, so other processes drop their cached copy.
SERIES_CHANNEL = "docnum_series"

_ROW_COLUMNS = ("id", "tenant_id", "name", *FIELD_NAMES, "version", "created_at", "updated_at")
COLUMNS = ", ".join(f"s.{column}" for column in (*_ROW_COLUMNS, "archived_at"))
# A series with its format history, oldest first, as three parallel arrays.
SELECT_WITH_FORMATS = f"""
SELECT {COLUMNS}, f.formats, f.effective_froms, f.set_ats
FROM series AS s
CROSS JOIN LATERAL (
    SELECT array_agg(format ORDER BY id) AS formats,
           array_agg(effective_from ORDER BY id) AS effective_froms,
           array_agg(set_at ORDER BY id) AS set_ats
    FROM series_formats WHERE series_id = s.id
) AS f
"""

INSERT_SERIES = f"""
INSERT INTO series (tenant_id, name, {", ".join(FIELD_NAMES)})
VALUES ($1, $2, {", ".join(f"${i}" for i in range(3, 3 + len(FIELD_NAMES)))})
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING id
"""
INSERT_FORMAT = "INSERT INTO series_formats (series_id, format, effective_from) VALUES ($1, $2, $3)"
SELECT_SERIES = SELECT_WITH_FORMATS + " WHERE s.tenant_id = $1 AND s.name = $2"
SELECT_SERIES_BY_ID = SELECT_WITH_FORMATS + " WHERE s.id = $1"
# Taken before a change so two admins cannot interleave a check and an update, and so that no
# issuing statement (which holds the row FOR KEY SHARE) runs between them.
LOCK_SERIES = "SELECT id FROM series WHERE tenant_id = $1 AND name = $2 FOR UPDATE"
LIST_SERIES = (
    SELECT_WITH_FORMATS
    + """
WHERE s.tenant_id = $1 AND s.name > $2 AND (s.archived_at IS NULL OR $3)
ORDER BY s.name LIMIT $4
"""
)
# Every change makes a new version of the definition, even one that leaves the fields as they were
# (a new format with a date).
UPDATE_SERIES = f"""
UPDATE series SET {", ".join(f"{name} = ${i}" for i, name in enumerate(FIELD_NAMES, 2))},
    version = version + 1, updated_at = now()
WHERE id = $1
"""
ARCHIVE_SERIES = """
UPDATE series SET archived_at = now(), updated_at = now(), version = version + 1
WHERE id = $1 AND archived_at IS NULL
"""
RESTORE_SERIES = """
UPDATE series SET archived_at = NULL, updated_at = now(), version = version + 1
WHERE id = $1 AND archived_at IS NOT NULL
"""
HAS_COUNTERS = "SELECT EXISTS (SELECT 1 FROM counters WHERE series_id = $1)"
# A counter's last value, $2 being the series' mode: for sequence mode it lives in the PostgreSQL
# sequence that the counter row names.
LAST_VALUE = """CASE WHEN $2 = 'sequence'
            THEN pg_sequence_last_value(('docnum_seq_' || id)::regclass)
            ELSE last_value END"""
SELECT_COUNTERS = f"""
SELECT period, variables, {LAST_VALUE} AS last_value
FROM counters WHERE series_id = $1 ORDER BY period, variables
"""
HIGHEST_VALUE = f"SELECT max({LAST_VALUE}) FROM counters WHERE series_id = $1"
NOTIFY_CHANGE = "SELECT pg_notify($1, $2)"


def etag(series: Series) -> str:
    """The strong entity tag of a series' definition: its version, bumped by every change."""
    return f'"v{series.version}"'


def check_if_match(series: Series, if_match: str | None) -> None:
    """Refuse a change made from another version than ``series`` (RFC 9110 section 13.1.1).

    ``*`` matches any series; otherwise one of the listed tags must equal the current one, by
    strong comparison (a weak ``W/"v7"`` never matches). No header: no condition.
    """
    if if_match is None:
        return
    tags = {tag.strip() for tag in if_match.split(",")}
    if "*" not in tags and etag(series) not in tags:
        raise PreconditionFailed(
            f"Series {series.name!r} is at version {etag(series)} now, not {if_match.strip()}: "
            "it changed since it was read. Read it again and decide on the change."
        )


def from_row(row: asyncpg.Record) -> Series:
    history = zip(row["formats"], row["effective_froms"], row["set_ats"], strict=True)
    formats = tuple(
        Format.of(f, since, at, row["reset"], row["fiscal_year_start"]) for f, since, at in history
    )
    return Series.model_construct(
        **{column: row[column] for column in _ROW_COLUMNS},
        archived_at=row["archived_at"],
        formats=formats,
    )


def checked_fields(fields: SeriesFields, name: str) -> SeriesFields:
    """Apply the rules that span fields; return the fields with the ledger default resolved.

    The template must tell the periods apart (a yearly series needs a year in its numbers), and
    tell counters apart: with a counter per variable values, two variable values must never render
    alike.
    """
    if fields.max_value is not None and fields.max_value < fields.start:
        raise field_error("max_value", "must be at least start")
    if fields.mode == "gapless" and fields.ledger is False:
        raise field_error("ledger", "a gapless series always keeps its ledger")
    if fields.date_order == "strict" and fields.mode != "gapless":
        raise field_error(
            "date_order",
            f"strict needs a gapless series: {fields.mode} mode hands out values without "
            "holding the counter, so the order of their dates could not be kept",
        )
    template = parse_template(fields.format)
    try:
        check_template(
            template,
            reset=fields.reset,
            fiscal_year_start=fields.fiscal_year_start,
            series=name,
            max_value=fields.max_value,
            variables_in_key=not fields.shared_counter,
        )
    except TemplateError as error:
        raise field_error("format", str(error)) from None
    rules = number_rules(fields.number_profile, fields.max_length, fields.allowed_characters)
    broken = rules.check_template(
        template,
        series=name,
        max_value=fields.max_value,
        fiscal_year_start=fields.fiscal_year_start,
    )
    if broken is not None:
        raise field_error("format", broken)
    ledger = fields.mode == "gapless" if fields.ledger is None else fields.ledger
    return fields.model_copy(update={"ledger": ledger})


def check_new_format(series: Series, fields: SeriesFields) -> None:
    """Refuse a format that could render a string some earlier format of the series could."""
    new = parse_template(fields.format)
    earlier_templates = {entry.format: entry.template for entry in series.formats}
    for earlier in earlier_templates.values():
        collision = find_collision(
            earlier,
            new,
            series=series.name,
            variables_in_key=not fields.shared_counter,
        )
        if collision is not None:
            raise FormatConflict(
                f"{collision.reason}. Earlier formats stay in use for the numbers they issued "
                "(and for earlier dates), so a new format must not be able to render what they "
                "can: add a literal prefix or separator that no earlier format has, or start a "
                "new series."
            )


async def create(conn: Connection, tenant_id: int, body: SeriesCreate, *, actor: str) -> Series:
    fields = checked_fields(body, body.name)
    async with conn.transaction():
        series_id = await conn.fetchval(
            INSERT_SERIES, tenant_id, body.name, *(getattr(fields, n) for n in FIELD_NAMES)
        )
        if series_id is None:
            raise SeriesExists(f"A series named {body.name!r} already exists.")
        await conn.execute(INSERT_FORMAT, series_id, fields.format, None)
        series = await _by_id(conn, series_id)
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
    return from_row(row)


async def _by_id(conn: Executor, series_id: int) -> Series:
    row = await conn.fetchrow(SELECT_SERIES_BY_ID, series_id)
    assert row is not None
    return from_row(row)


async def counters(conn: Executor, series: Series) -> list[CounterValue]:
    rows = await conn.fetch(SELECT_COUNTERS, series.id, series.mode)
    return [CounterValue(**dict(row)) for row in rows]


async def page(
    conn: Executor,
    tenant_id: int,
    *,
    after: str,
    limit: int,
    include_archived: bool,
) -> list[Series]:
    rows = await conn.fetch(LIST_SERIES, tenant_id, after, include_archived, limit)
    return [from_row(row) for row in rows]


async def update(
    conn: Connection,
    tenant_id: int,
    name: str,
    patch: SeriesUpdate,
    *,
    actor: str,
    if_match: str | None = None,
) -> Series:
    changes = patch.model_dump(exclude_unset=True)
    effective_from: datetime.date | None = changes.pop("effective_from", None)
    reopen_reason: str | None = changes.pop("reopen_reason", None)
    if changes.get("mode") == "gapless" and changes.get("ledger") is None:
        changes["ledger"] = True  # becoming gapless turns the ledger on, as creating one does
    async with conn.transaction():
        current = await _locked(conn, tenant_id, name)
        check_if_match(current, if_match)
        old = current.fields()
        try:
            merged = SeriesFields.model_validate({**old, **changes})
        except ValidationError as error:  # an explicit null for a field that needs a value
            raise invalid_fields(error.errors()) from None
        new = checked_fields(merged, name)
        changed: dict[str, Any] = {k: v for k, v in new.model_dump().items() if old[k] != v}
        new_format = "format" in changed
        structural = sorted(set(changed) & set(STRUCTURAL_FIELDS))
        in_use = await conn.fetchval(HAS_COUNTERS, current.id)
        if structural and in_use:
            raise SeriesInUse(
                f"{', '.join(structural)} cannot change once numbers were issued; "
                "create a new series instead."
            )
        if new_format:
            check_new_format(current, new)
        if "max_value" in changed and new.max_value is not None:
            highest = await conn.fetchval(HIGHEST_VALUE, current.id, current.mode)
            if highest is not None and new.max_value < highest:
                raise field_error("max_value", f"{highest} was already issued or reserved")
        action = _closing_action(current, new, reopen_reason)
        if not changed and not new_format:
            return current
        await conn.execute(UPDATE_SERIES, current.id, *(getattr(new, n) for n in FIELD_NAMES))
        if new_format:
            await conn.execute(INSERT_FORMAT, current.id, new.format, effective_from)
        changed_series = await _by_id(conn, current.id)
        if changed_series.mode == "sequence" and "max_value" in changed:
            await sequences.set_ceiling(conn, changed_series)
        details: dict[str, Any] = {k: {"old": old[k], "new": v} for k, v in changed.items()}
        if effective_from is not None:
            details["effective_from"] = effective_from.isoformat()
        if action == "series.reopened":
            details["reopen_reason"] = reopen_reason
        await audit.record(
            conn, tenant_id=tenant_id, actor=actor, action=action, series=name, details=details
        )
        await conn.execute(NOTIFY_CHANGE, SERIES_CHANNEL, f"{tenant_id}:{name}")
    return changed_series


def _closing_action(current: Series, new: SeriesFields, reopen_reason: str | None) -> str:
    """The audit action of a change: closing or reopening when it moves closed_through.

    Moving it back (or clearing it) opens days that were closed, so it needs a reason.
    """
    old_close, new_close = current.closed_through, new.closed_through
    if old_close == new_close:
        if reopen_reason is not None:
            raise field_error("reopen_reason", "closed_through does not move back")
        return "series.changed"
    if old_close is not None and (new_close is None or new_close < old_close):
        if reopen_reason is None:
            raise field_error(
                "closed_through",
                f"the series is closed through {old_close}; moving back reopens closed days, "
                "so send reopen_reason with it",
            )
        return "series.reopened"
    if reopen_reason is not None:
        raise field_error("reopen_reason", "closed_through does not move back")
    return "series.closed"


async def archive(conn: Connection, tenant_id: int, name: str, *, actor: str) -> None:
    """Stop issuing from a series; what it issued stays. Archiving twice changes nothing."""
    await _set_archived(conn, tenant_id, name, ARCHIVE_SERIES, "series.archived", actor)


async def restore(conn: Connection, tenant_id: int, name: str, *, actor: str) -> Series:
    """Issue from an archived series again, where it stopped. Restoring a series that is not
    archived changes nothing."""
    return await _set_archived(conn, tenant_id, name, RESTORE_SERIES, "series.restored", actor)


async def _set_archived(
    conn: Connection, tenant_id: int, name: str, statement: str, action: str, actor: str
) -> Series:
    async with conn.transaction():
        current = await _locked(conn, tenant_id, name)
        if await conn.execute(statement, current.id) != "UPDATE 1":
            return current
        await audit.record(conn, tenant_id=tenant_id, actor=actor, action=action, series=name)
        await conn.execute(NOTIFY_CHANGE, SERIES_CHANNEL, f"{tenant_id}:{name}")
        return await _by_id(conn, current.id)


async def _locked(conn: Connection, tenant_id: int, name: str) -> Series:
    """The series, read after taking its row FOR UPDATE (so the read sees the latest version)."""
    series_id = await conn.fetchval(LOCK_SERIES, tenant_id, name) if _may_exist(name) else None
    if series_id is None:
        raise SeriesNotFound(f"No series named {name!r}.")
    return await _by_id(conn, series_id)
