"""The live preview of a format: the number a series would issue today, or on a chosen date.

The format is checked by the same code as a series' create and update (so the preview shows the
error the form would show), then rendered for the next value of the period: the series' own
counter when it exists, else its start.
"""

import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from app import series as series_sql
from app.admin.forms import FormInvalid, parse, problem_errors, values
from app.admin.session import AdminSession, SessionsDep, SignInRequired, get_admin_session
from app.definition import Series
from app.deps import ServicesDep
from app.errors import InvalidRequest, NotFound, Unauthorized
from app.formatting import NumberTooLong, VariableError, parse_template
from app.periods import period_key, today_in
from app.schemas import SeriesFields
from app.series import checked_fields
from app.services import Services

router = APIRouter(prefix="/admin")

PREVIEW_FIELDS = ("format", "reset", "fiscal_year_start", "timezone", "start", "step", "max_value")
PLACEHOLDER_NAME = "series"


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


def _sample(
    fields: SeriesFields,
    name: str,
    day: datetime.date,
    variables: dict[str, str],
    last_values: dict[str, int | None],
) -> dict[str, Any]:
    period = period_key(fields.reset, day, fields.fiscal_year_start)
    last = last_values.get(period)
    value = fields.start if last is None else last + fields.step
    sample: dict[str, Any] = {"date": day.isoformat(), "period": period, "value": value}
    try:
        sample["number"] = parse_template(fields.format).render(
            value,
            date=day,
            series=name,
            variables=variables,
            fiscal_year_start=fields.fiscal_year_start,
        )
    except (VariableError, NumberTooLong) as error:
        sample["error"] = str(error)
    return sample


@router.get("/preview", include_in_schema=False)
async def preview(
    request: Request,
    signed_in: Annotated[AdminSession, Depends(_signed_in)],
    services: ServicesDep,
    name: Annotated[str, Query(max_length=63)] = "",
    series: Annotated[str, Query(max_length=63, description="An existing series")] = "",
    date: Annotated[str, Query(max_length=10)] = "",
    variables: Annotated[str, Query(max_length=1000)] = "",
) -> dict[str, Any]:
    """What the form's fields would render; fields the form leaves out keep the series' values."""
    existing = await _existing(services, signed_in, series) if series else None
    shown_name = existing.name if existing else name.strip() or PLACEHOLDER_NAME
    defaults = existing.fields() if existing else {}
    try:
        fields = parse(SeriesFields, values(request.query_params, defaults), PREVIEW_FIELDS)
        fields = checked_fields(fields, shown_name)
    except FormInvalid as invalid:
        return {"errors": invalid.errors}
    except InvalidRequest as problem:
        return {"errors": problem_errors(problem)}
    try:
        chosen = datetime.date.fromisoformat(date) if date else None
    except ValueError:
        return {"errors": {"date": "not a date (YYYY-MM-DD)"}}
    try:
        supplied = parse_variables(variables)
    except ValueError as error:
        return {"errors": {"variables": str(error)}}
    last_values: dict[str, int | None] = {}
    if existing is not None:
        counters = await series_sql.counters(services.pool, existing)
        last_values = {c.period: c.last_value for c in counters if not c.variables}
    today = today_in(fields.timezone, datetime.datetime.now(datetime.UTC))
    days = [today] if chosen is None else [today, chosen]
    return {
        "errors": {},
        "variables": sorted(parse_template(fields.format).variables),
        "samples": [_sample(fields, shown_name, d, supplied, last_values) for d in days],
    }


async def _existing(services: Services, signed_in: AdminSession, name: str) -> Series | None:
    try:
        return await series_sql.fetch(services.pool, signed_in.principal.tenant_id, name)
    except NotFound:
        return None
