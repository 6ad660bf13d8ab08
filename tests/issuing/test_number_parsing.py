"""Reading a number back into its value, date digits and variables (Template.parse)."""

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.formatting import MAX_NUMBER_LENGTH, check_template, parse_template

# Templates a series accepts (check_template), with the reset they are checked for.
TEMPLATES = [
    ("INV-{YYYY}-{seq:06}", "yearly"),
    ("{seq}", "never"),
    ("PO-{var:branch}-{seq:04}", "never"),
    ("{series}/{YY}{MM}{DD}/{seq:03}", "daily"),
    ("FY{FY}-Q{Q}-{seq}", "yearly"),
    ("{var:a}/{seq}-{var:b}", "never"),
    ("{var:desk}-{YYYY}-{MM}/{seq:02}-{var:desk}", "monthly"),
    ("{{{seq:05}}}", "never"),
]
DATES = st.dates(datetime.date(2000, 1, 1), datetime.date(2099, 12, 31))
VALUES = st.integers(0, 10**12)
VARIABLE_VALUES = st.from_regex(r"\A[A-Za-z0-9_-]{1,12}\Z")


@pytest.mark.parametrize(("source", "reset"), TEMPLATES)
@settings(max_examples=150, deadline=None)
@given(value=VALUES, date=DATES, a=VARIABLE_VALUES, b=VARIABLE_VALUES)
def test_a_rendered_number_parses_back_to_its_value_date_and_variables(
    source: str, reset: str, value: int, date: datetime.date, a: str, b: str
) -> None:
    template = parse_template(source)
    check_template(template, reset=reset, fiscal_year_start=1, series="INV", max_value=None)
    variables = dict(zip(sorted(template.variables), (a, b), strict=False))
    number = template.render(value, date=date, series="INV", variables=variables)
    parsed = template.parse(number, series="INV")
    assert parsed is not None
    assert parsed.value == value
    assert parsed.variables == variables
    for name, digits in parsed.dates.items():
        one = parse_template(f"{{{name}}}{{seq}}")
        assert one.render(0, date=date, series="INV") == digits + "0"
    assert template.render(parsed.value, date=date, series="INV", variables=parsed.variables) == (
        number
    )


@pytest.mark.parametrize(
    ("source", "number"),
    [
        ("INV-{YYYY}-{seq:06}", "INV-2026-12345"),  # fewer digits than the padding
        ("INV-{YYYY}-{seq:06}", "INV-2026-0123456"),  # a zero no rendering pads with
        ("INV-{YYYY}-{seq:06}", "INV-26-000001"),  # a year of two digits
        ("INV-{YYYY}-{seq:06}", "inv-2026-000001"),  # literal text differs
        ("{seq}", "007"),
        ("{seq}", ""),
        ("PO-{var:branch}-{seq:04}", "PO-BR 07-0001"),  # outside the variable alphabet
        ("{var:desk}-{YYYY}-{MM}/{seq:02}-{var:desk}", "A-2026-03/01-B"),  # a repeat differs
        ("{series}-{seq}", "ORD-1"),  # another series' name
    ],
)
def test_a_string_no_rendering_gives_does_not_parse(source: str, number: str) -> None:
    assert parse_template(source).parse(number, series="INV") is None


def test_a_string_longer_than_any_number_does_not_parse() -> None:
    assert parse_template("{seq}").parse("1" * (MAX_NUMBER_LENGTH + 1), series="INV") is None


def test_date_digits_are_read_not_checked() -> None:
    parsed = parse_template("{YYYY}{MM}-{seq}").parse("202613-7", series="INV")
    assert parsed is not None
    assert (parsed.value, parsed.dates) == (7, {"YYYY": "2026", "MM": "13"})
