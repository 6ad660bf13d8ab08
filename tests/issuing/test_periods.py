import datetime
import typing
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.periods import RESETS, Reset, fiscal_year, is_valid_timezone, period_key, today_in

UTC = datetime.UTC


def test_resets_match_the_reset_type() -> None:
    assert set(RESETS) == set(typing.get_args(Reset))


# period_key


@pytest.mark.parametrize(
    ("reset", "expected"),
    [("never", "all"), ("yearly", "2026"), ("monthly", "2026-12"), ("daily", "2026-12-31")],
)
def test_period_key_formats(reset: Reset, expected: str) -> None:
    assert period_key(reset, datetime.date(2026, 12, 31)) == expected


@pytest.mark.parametrize("reset", ["yearly", "monthly", "daily"])
def test_new_year_starts_a_new_period(reset: Reset) -> None:
    assert period_key(reset, datetime.date(2026, 12, 31)) != period_key(
        reset, datetime.date(2027, 1, 1)
    )


def test_never_resets_across_years() -> None:
    assert period_key("never", datetime.date(2026, 12, 31)) == period_key(
        "never", datetime.date(2027, 1, 1)
    )


@pytest.mark.parametrize(
    ("last_day", "next_day"),
    [
        (datetime.date(2026, 1, 31), datetime.date(2026, 2, 1)),
        (datetime.date(2026, 2, 28), datetime.date(2026, 3, 1)),
        (datetime.date(2028, 2, 29), datetime.date(2028, 3, 1)),
        (datetime.date(2026, 4, 30), datetime.date(2026, 5, 1)),
    ],
)
def test_month_ends(last_day: datetime.date, next_day: datetime.date) -> None:
    assert period_key("monthly", last_day) != period_key("monthly", next_day)
    assert period_key("yearly", last_day) == period_key("yearly", next_day)


def test_leap_day() -> None:
    leap_day = datetime.date(2028, 2, 29)
    assert period_key("daily", leap_day) == "2028-02-29"
    assert period_key("monthly", leap_day) == "2028-02"
    assert period_key("monthly", datetime.date(2028, 2, 1)) == "2028-02"


def test_keys_are_zero_padded_for_early_years() -> None:
    day = datetime.date(33, 1, 2)
    assert period_key("yearly", day) == "0033"
    assert period_key("monthly", day) == "0033-01"
    assert period_key("daily", day) == "0033-01-02"


def test_yearly_key_follows_the_fiscal_year() -> None:
    assert period_key("yearly", datetime.date(2026, 3, 31), fiscal_year_start=4) == "2025"
    assert period_key("yearly", datetime.date(2026, 4, 1), fiscal_year_start=4) == "2026"


def test_monthly_and_daily_keys_ignore_the_fiscal_year() -> None:
    day = datetime.date(2026, 3, 31)
    assert period_key("monthly", day, fiscal_year_start=4) == "2026-03"
    assert period_key("daily", day, fiscal_year_start=4) == "2026-03-31"


@given(
    st.sampled_from(RESETS),
    st.dates(),
    st.dates(),
    st.integers(min_value=1, max_value=12),
)
def test_keys_sort_like_their_dates(
    reset: Reset, a: datetime.date, b: datetime.date, start: int
) -> None:
    earlier, later = sorted([a, b])
    assert period_key(reset, earlier, start) <= period_key(reset, later, start)


def test_unknown_reset() -> None:
    with pytest.raises(ValueError, match="unknown reset"):
        period_key(typing.cast(Reset, "weekly"), datetime.date(2026, 1, 1))


@pytest.mark.parametrize("start", [0, 13, -1])
def test_fiscal_start_must_be_a_month(start: int) -> None:
    with pytest.raises(ValueError, match="month"):
        period_key("yearly", datetime.date(2026, 1, 1), fiscal_year_start=start)
    with pytest.raises(ValueError, match="month"):
        fiscal_year(datetime.date(2026, 1, 1), start)


# fiscal_year


@pytest.mark.parametrize(
    ("day", "start", "expected"),
    [
        (datetime.date(2026, 3, 31), 4, 2025),
        (datetime.date(2026, 4, 1), 4, 2026),
        (datetime.date(2026, 12, 31), 4, 2026),
        (datetime.date(2026, 1, 1), 1, 2026),
        (datetime.date(2026, 12, 31), 1, 2026),
        (datetime.date(2026, 11, 30), 12, 2025),
        (datetime.date(2026, 12, 1), 12, 2026),
    ],
)
def test_fiscal_year_is_labelled_by_its_starting_year(
    day: datetime.date, start: int, expected: int
) -> None:
    assert fiscal_year(day, start) == expected


@given(st.dates())
def test_fiscal_year_starting_in_january_is_the_calendar_year(day: datetime.date) -> None:
    assert fiscal_year(day, 1) == day.year


# today_in


def test_new_york_is_still_on_new_years_eve() -> None:
    now = datetime.datetime(2027, 1, 1, 4, 30, tzinfo=UTC)
    assert today_in("UTC", now) == datetime.date(2027, 1, 1)
    assert today_in("America/New_York", now) == datetime.date(2026, 12, 31)


def test_last_second_of_the_year_in_new_york() -> None:
    now = datetime.datetime(2026, 12, 31, 23, 59, 59, tzinfo=ZoneInfo("America/New_York"))
    assert today_in("America/New_York", now) == datetime.date(2026, 12, 31)
    assert today_in("UTC", now) == datetime.date(2027, 1, 1)
    one_second_later = now + datetime.timedelta(seconds=1)
    assert today_in("America/New_York", one_second_later) == datetime.date(2027, 1, 1)


def test_kiritimati_is_already_in_the_new_year() -> None:
    now = datetime.datetime(2026, 12, 31, 10, 0, tzinfo=UTC)
    assert today_in("Pacific/Kiritimati", now) == datetime.date(2027, 1, 1)
    assert today_in("UTC", now) == datetime.date(2026, 12, 31)


def test_result_does_not_depend_on_the_offset_of_now() -> None:
    instant = datetime.datetime(2027, 1, 1, 4, 30, tzinfo=UTC)
    tokyo = instant.astimezone(datetime.timezone(datetime.timedelta(hours=9)))
    assert today_in("America/New_York", tokyo) == today_in("America/New_York", instant)


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        today_in("UTC", datetime.datetime(2026, 1, 1))


def test_unknown_timezone_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        today_in("Mars/Olympus_Mons", datetime.datetime(2026, 1, 1, tzinfo=UTC))


# is_valid_timezone


@pytest.mark.parametrize(
    "name",
    ["UTC", "America/New_York", "Europe/Paris", "Pacific/Kiritimati", "Etc/GMT+5"],
)
def test_valid_timezones(name: str) -> None:
    assert is_valid_timezone(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Mars/Olympus_Mons",
        "america/new_york",
        "America",
        "America/",
        "/America/New_York",
        "/etc/passwd",
        "../../etc/passwd",
        "America/../Europe/Paris",
        "America\\New_York",
        "America/New_York\x00",
        " UTC",
        "localtime",
        "posixrules",
        "zone.tab",
        "Europe/Paris" * 6,
        "A" * 65,
    ],
)
def test_invalid_timezones(name: str) -> None:
    assert not is_valid_timezone(name)


@given(st.text(max_size=80))
def test_is_valid_timezone_never_raises(name: str) -> None:
    assert is_valid_timezone(name) in (True, False)


def test_non_string_is_not_a_timezone() -> None:
    assert not is_valid_timezone(typing.cast(str, None))
