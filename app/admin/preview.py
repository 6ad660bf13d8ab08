"""The live preview of a format: its verdict, and the number a series would issue today, or on a
chosen date.

The fields are checked by the same code as a series' create and update (``checked_fields``, and
for a new format of an existing series ``check_new_format``), so the preview shows the error or
the format conflict that saving would, before saving. The samples are rendered by the series as it
would be once saved: the format in force on the sample's date (``Series.format_for``, with the
form's format added to the history when it is new, from its ``effective_from``), and the next
value of the counter that date and those variables take (``Series.counter``): the counter's last
value plus the step when it exists, else the start.
"""

import datetime
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from app import series as series_sql
from app.admin.forms import FormInvalid, parse, problem_errors, values
from app.admin.ledger_pages import CounterRow
from app.admin.series_pages import EDIT_CONFLICTS
from app.admin.session import AdminSession, SessionsDep, SignInRequired, get_admin_session
from app.definition import CounterKey, Format, Series
from app.deps import ServicesDep
from app.formatting import parse_template
from app.issuing.issued import render_numbers
from app.problems import FormatConflict, InvalidRequest, NotFound, Unauthorized
from app.schemas import SeriesFields, decode_variables
from app.series import check_new_format, checked_fields
from app.services import Services

router = APIRouter(prefix="/admin")

PREVIEW_FIELDS = (
    "format",
    "reset",
    "fiscal_year_start",
    "timezone",
    "start",
    "step",
    "max_value",
    "shared_counter",
)
PLACEHOLDER_NAME = "series"
ACCEPTED = "Accepted: no earlier format of this series can render a number this one renders."


async def _signed_in(
    request: Request, sessions: SessionsDep, services: ServicesDep
) -> AdminSession:
    try:
        return await get_admin_session(request, sessions, services)
    except SignInRequired:
        raise Unauthorized("Sign in to the portal first.") from None


def parse_variables(text: str) -> dict[str, str]:
    """``name=value`` pairs separated by commas, as typed into the preview's variables field."""
    pairs: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"write variables as name=value, not {item.strip()!r}")
        pairs[name.strip()] = value.strip()
    return pairs


def _date(text: str) -> datetime.date | None:
    return datetime.date.fromisoformat(text) if text else None


def _draft(
    existing: Series | None,
    fields: SeriesFields,
    name: str,
    effective_from: datetime.date | None,
    now: datetime.datetime,
) -> Series:
    """The series as saving the form would leave it. A series not created yet has only what
    ``format_for`` and ``counter`` read: its fields and its one format."""
    if existing is None:
        first = Format.of(fields.format, None, now, fields.reset, fields.fiscal_year_start)
        return Series.model_construct(**fields.model_dump(), name=name, formats=(first,))
    formats = existing.formats
    if fields.format != existing.format:
        formats = (
            *formats,
            Format.of(fields.format, effective_from, now, fields.reset, fields.fiscal_year_start),
        )
    return existing.model_copy(update={**fields.model_dump(), "formats": formats})


def _sample(
    draft: Series,
    day: datetime.date,
    variables: dict[str, str],
    last_values: Mapping[CounterKey, int | None],
) -> dict[str, Any]:
    entry = draft.format_for(day)
    # A variable left out names no counter; rendering then says which one is missing.
    named = {**dict.fromkeys(entry.template.variables, ""), **variables}
    counter = draft.counter(day, entry.template, named)
    last = last_values.get(counter)
    value = draft.start if last is None else last + draft.step
    sample: dict[str, Any] = {
        "date": day.isoformat(),
        "format": entry.format,
        "period": counter.period,
        "value": value,
    }
    try:
        [sample["number"]] = render_numbers(draft, entry.template, [value], day, variables)
    except InvalidRequest as unrenderable:
        sample["error"] = unrenderable.detail
    else:
        sample["variables"] = decode_variables(counter.variables)
    return sample


@router.get("/preview", include_in_schema=False)
async def preview(
    request: Request,
    signed_in: Annotated[AdminSession, Depends(_signed_in)],
    services: ServicesDep,
    name: Annotated[str, Query(max_length=63)] = "",
    series: Annotated[str, Query(max_length=63, description="An existing series")] = "",
    date: Annotated[str, Query(max_length=10)] = "",
    effective_from: Annotated[str, Query(max_length=10)] = "",
    variables: Annotated[str, Query(max_length=1000)] = "",
) -> dict[str, Any]:
    """What the form's fields would render; fields the form leaves out keep the series' values.

    For an existing series, a format other than its current one gets the verdict ``PATCH``
    would give: the ``format-conflict`` detail as the format's error, or ``verdict``.
    """
    existing = await _existing(services, signed_in, series) if series else None
    shown_name = existing.name if existing else name.strip() or PLACEHOLDER_NAME
    defaults = existing.fields() if existing else {}
    new_format = False
    try:
        fields = parse(SeriesFields, values(request.query_params, defaults), PREVIEW_FIELDS)
        fields = checked_fields(fields, shown_name)
        if existing is not None and fields.format != existing.format:
            new_format = True
            check_new_format(existing, fields)
    except FormInvalid as invalid:
        return {"errors": invalid.errors}
    except (InvalidRequest, FormatConflict) as problem:
        return {"errors": problem_errors(problem, beside=EDIT_CONFLICTS)}
    try:
        chosen = _date(date)
    except ValueError:
        return {"errors": {"date": "not a date (YYYY-MM-DD)"}}
    try:
        since = _date(effective_from)
    except ValueError:
        return {"errors": {"effective_from": "not a date (YYYY-MM-DD)"}}
    try:
        supplied = parse_variables(variables)
    except ValueError as error:
        return {"errors": {"variables": str(error)}}
    last_values: dict[CounterKey, int | None] = {}
    if existing is not None:
        counters = await series_sql.counters(services.pool, existing)
        last_values = {row.key: row.last_value for row in map(CounterRow.of, counters)}
    now = datetime.datetime.now(datetime.UTC)
    draft = _draft(existing, fields, shown_name, since, now)
    today = draft.today(now)
    days = [today] if chosen is None else [today, chosen]
    return {
        "errors": {},
        "verdict": ACCEPTED if new_format else None,
        "variables": sorted(parse_template(fields.format).variables),
        "samples": [_sample(draft, d, supplied, last_values) for d in days],
    }


async def _existing(services: Services, signed_in: AdminSession, name: str) -> Series | None:
    try:
        return await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    except NotFound:
        return None
