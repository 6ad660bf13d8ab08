"""Counter periods and the calendar date a number belongs to.

A series restarts its counter at the start of each period, so the period key is
what separates two numbers that share a counter value. Keys are plain strings
that sort chronologically within one reset kind, which keeps them usable as
part of a database key.
"""

from __future__ import annotations

import datetime
import functools
import re
import typing
import zoneinfo

Reset = typing.Literal["never", "yearly", "monthly", "daily"]

RESETS: tuple[Reset, ...] = ("never", "yearly", "monthly", "daily")

MAX_TIMEZONE_LENGTH = 64

# Shape of an IANA key such as "America/Argentina/Buenos_Aires" or "Etc/GMT+5".
# Checked before touching the time zone database so that user input never
# reaches the filesystem as a path ("..", absolute paths, NUL bytes).
_TIMEZONE_SHAPE = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")

# Present in some system databases but not IANA names: "localtime" mirrors the
# host's own setting, so accepting it would make numbering depend on the server.
_NOT_IANA = frozenset({"localtime"})


def fiscal_year(day: datetime.date, fiscal_year_start: int) -> int:
    """The fiscal year containing `day`, labelled by the calendar year it starts in.

    With `fiscal_year_start=4`, 2026-03-31 belongs to fiscal year 2025 and
    2026-04-01 to 2026. With a start of 1 the fiscal year is the calendar year.
    Raises ValueError unless `fiscal_year_start` is a month number (1..12).
    """
    _check_month(fiscal_year_start)
    return day.year if day.month >= fiscal_year_start else day.year - 1


def period_key(reset: Reset, day: datetime.date, fiscal_year_start: int = 1) -> str:
    """The counter period that `day` falls in.

    Two dates share a key exactly when a counter with this reset must not restart
    between them: "all" for never, "2026" for yearly (the fiscal year label when
    the fiscal year does not start in January), "2026-12" for monthly and
    "2026-12-31" for daily. Monthly and daily keys follow the calendar whatever
    the fiscal year start. Raises ValueError for an unknown reset or month.
    """
    _check_month(fiscal_year_start)
    if reset == "never":
        return "all"
    if reset == "yearly":
        return f"{fiscal_year(day, fiscal_year_start):04d}"
    if reset == "monthly":
        return f"{day.year:04d}-{day.month:02d}"
    if reset == "daily":
        return day.isoformat()
    raise ValueError(f"unknown reset {reset!r}; expected one of {', '.join(RESETS)}")


def today_in(timezone: str, now: datetime.datetime) -> datetime.date:
    """The calendar date on a wall clock in `timezone` at the instant `now`.

    Document dates follow the issuer's local calendar, not UTC: 2027-01-01T04:30Z
    is still 2026-12-31 in New York. `now` is passed in so that callers control
    the clock. Raises ValueError when `now` is naive (it names no instant) or
    the time zone is not a valid IANA name.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if not is_valid_timezone(timezone):
        raise ValueError(f"unknown time zone {timezone!r}")
    return now.astimezone(zoneinfo.ZoneInfo(timezone)).date()


def is_valid_timezone(name: str) -> bool:
    """Whether `name` is an IANA time zone key known to this host, such as
    "Europe/Paris" or "UTC".

    Safe on untrusted input: never raises, and anything that is not shaped like
    a key (empty, longer than 64 characters, a path) is rejected without
    consulting the time zone database. Matching is case-sensitive, as IANA keys are.
    """
    if not isinstance(name, str) or not 0 < len(name) <= MAX_TIMEZONE_LENGTH:
        return False
    if _TIMEZONE_SHAPE.fullmatch(name) is None or name in _NOT_IANA:
        return False
    return name in _known_timezones()


@functools.cache
def _known_timezones() -> frozenset[str]:
    # Scanning the database takes tens of milliseconds, so do it once per process.
    return frozenset(zoneinfo.available_timezones())


def _check_month(fiscal_year_start: int) -> None:
    if not 1 <= fiscal_year_start <= 12:
        raise ValueError(
            f"fiscal_year_start must be a month from 1 to 12, not {fiscal_year_start!r}"
        )
