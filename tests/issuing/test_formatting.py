import datetime
import itertools
import re
from collections import defaultdict
from collections.abc import Mapping

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.formatting import (
    DATE_TOKENS,
    MAX_NUMBER_LENGTH,
    MAX_TEMPLATE_LENGTH,
    Collision,
    DatePart,
    NumberTooLong,
    Seq,
    SeriesName,
    Template,
    TemplateError,
    Variable,
    VariableError,
    check_template,
    find_collision,
    parse_template,
    two_digit_year_window,
)
from app.periods import Reset, period_key

DAY = datetime.date(2026, 3, 5)


def render(
    source: str,
    value: int = 42,
    *,
    date: datetime.date = DAY,
    series: str = "INV",
    variables: Mapping[str, str] | None = None,
    fiscal_year_start: int = 1,
) -> str:
    return parse_template(source).render(
        value,
        date=date,
        series=series,
        variables=variables,
        fiscal_year_start=fiscal_year_start,
    )


# Tokens


def test_every_token() -> None:
    source = "{series}/{YYYY}/{YY}/{MM}/{DD}/Q{Q}/FY{FY}/{var:dept}/{seq}"
    number = render(source, variables={"dept": "sales"}, fiscal_year_start=4)
    assert number == "INV/2026/26/03/05/Q1/FY2025/sales/42"


def test_literal_text_is_copied() -> None:
    assert render("INV-{YYYY}-{seq:06}") == "INV-2026-000042"
    assert render("{seq}") == "42"
    assert render("Nº {seq} ✓") == "Nº 42 ✓"


@pytest.mark.parametrize(
    ("year", "expected"), [(2026, "26"), (2000, "00"), (2009, "09"), (33, "33")]
)
def test_two_digit_year(year: int, expected: str) -> None:
    assert render("{YY}{seq}", 1, date=datetime.date(year, 6, 1)) == f"{expected}1"


def test_four_digit_year_is_zero_padded() -> None:
    assert render("{YYYY}-{seq}", date=datetime.date(33, 1, 1)) == "0033-42"


def test_month_and_day_are_two_digits() -> None:
    assert render("{MM}{DD}-{seq}", date=datetime.date(2026, 1, 9)) == "0109-42"
    assert render("{MM}{DD}-{seq}", date=datetime.date(2026, 12, 31)) == "1231-42"


@pytest.mark.parametrize(
    ("month", "quarter"),
    [(1, "1"), (3, "1"), (4, "2"), (6, "2"), (7, "3"), (9, "3"), (10, "4"), (12, "4")],
)
def test_quarter(month: int, quarter: str) -> None:
    assert render("{Q}-{seq}", date=datetime.date(2026, month, 1)) == f"{quarter}-42"


@pytest.mark.parametrize(
    ("day", "start", "label"),
    [
        (datetime.date(2026, 3, 31), 4, "2025"),
        (datetime.date(2026, 4, 1), 4, "2026"),
        (datetime.date(2026, 1, 1), 1, "2026"),
        (datetime.date(2026, 12, 31), 1, "2026"),
    ],
)
def test_fiscal_year(day: datetime.date, start: int, label: str) -> None:
    assert render("{FY}-{seq}", date=day, fiscal_year_start=start) == f"{label}-42"


@pytest.mark.parametrize(
    ("day", "start", "long", "short"),
    [
        (datetime.date(2026, 3, 31), 4, "2025-26", "25-26"),
        (datetime.date(2026, 4, 1), 4, "2026-27", "26-27"),
        (datetime.date(2099, 5, 1), 4, "2099-00", "99-00"),
        (datetime.date(2000, 1, 15), 7, "1999-00", "99-00"),
        (datetime.date(2026, 12, 31), 1, "2026-27", "26-27"),
    ],
)
def test_fiscal_year_labels_name_both_years(
    day: datetime.date, start: int, long: str, short: str
) -> None:
    assert render("{FY:YYYY-YY}/{seq}", date=day, fiscal_year_start=start) == f"{long}/42"
    assert render("{FY:YY-YY}/{seq}", date=day, fiscal_year_start=start) == f"{short}/42"


def test_series_is_inserted_as_is() -> None:
    assert render("{series}-{seq}", series="PO") == "PO-42"


def test_parts_and_variables() -> None:
    template = parse_template("INV-{YYYY}-{var:dept}-{seq:06}{{{series}")
    assert template.parts == (
        "INV-",
        DatePart("YYYY"),
        "-",
        Variable("dept"),
        "-",
        Seq(pad=6),
        "{",
        SeriesName(),
    )
    assert template.variables == {"dept"}


def test_uses_lists_date_tokens_only() -> None:
    assert parse_template("{seq}").uses() == frozenset()
    assert parse_template("{series}{var:x}{YY}{FY}{seq}").uses() == {"YY", "FY"}
    every = "".join(f"{{{name}}}" for name in DATE_TOKENS)
    assert parse_template(every + "{seq}").uses() == set(DATE_TOKENS)


# Padding


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        ("{seq:06}", 42, "000042"),
        ("{seq:06}", 0, "000000"),
        ("{seq:06}", 123456, "123456"),
        ("{seq:06}", 1234567, "1234567"),
        ("{seq:01}", 7, "7"),
        ("{seq:020}", 1, "00000000000000000001"),
        ("{seq}", 0, "0"),
        ("{seq}", 2**63 - 1, "9223372036854775807"),
    ],
)
def test_padding(source: str, value: int, expected: str) -> None:
    assert render(source, value) == expected


# Braces


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{{seq}}}", "{42}"),
        ("a}}b{{c-{seq}", "a}b{c-42"),
        ("{{seq}}-{seq}", "{seq}-42"),
        ("{seq}}}}}", "42}}"),
    ],
)
def test_doubled_braces_are_literal(source: str, expected: str) -> None:
    assert render(source) == expected
    assert str(parse_template(source)) == source


# Parse errors


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{foo}-{seq}", "unknown token '{foo}' at position 0"),
        ("{seq}-{yyyy}", "unknown token '{yyyy}' at position 6"),
        ("{ seq }", "unknown token '{ seq }' at position 0"),
        ("{seq}{}", "unknown token '{}' at position 5"),
        ("{seq:abc}", "invalid padding in '{seq:abc}' at position 0"),
        ("{seq:0}", "invalid padding in '{seq:0}'"),
        ("{seq:00}", "invalid padding in '{seq:00}'"),
        ("{seq:6}", "invalid padding in '{seq:6}'"),
        ("{seq:006}", "invalid padding in '{seq:006}'"),
        ("{seq:021}", "invalid padding in '{seq:021}'"),
        ("{seq:0-1}", "invalid padding in '{seq:0-1}'"),
        ("{seq:0\u0663}", "invalid padding"),
        ("{seq:}", "invalid padding in '{seq:}'"),
        ("x{var:}{seq}", "invalid variable name in '{var:}' at position 1"),
        ("{var:two words}{seq}", "invalid variable name in '{var:two words}'"),
        ("{var:dépt}{seq}", "invalid variable name"),
        ("{var:" + "a" * 33 + "}{seq}", "invalid variable name"),
        ("INV-{seq", "unclosed '{' at position 4"),
        ("{seq}-{", "unclosed '{' at position 6"),
        ("{se{q}", "unclosed '{' at position 0"),
        ("INV}-{seq}", "unmatched '}' at position 3"),
        ("{seq}}", "unmatched '}' at position 5"),
        ("{{seq}", "unmatched '}' at position 5"),
        ("", "the template needs a {seq} token"),
        ("INV-{YYYY}", "the template needs a {seq} token"),
        ("{{seq}}", "the template needs a {seq} token"),
        ("{seq}-{seq:06}", "second {seq} token at position 6"),
        ("{seq:03}{seq}{seq}", "second {seq} token at position 8"),
    ],
)
def test_parse_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(source)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("source", "character", "position"),
    [
        ("INV\x00{seq}", "U+0000", 3),
        ("{seq}\n", "U+000A", 5),
        ("a\tb-{seq}", "U+0009", 1),
        ("{YYYY}-x\x1b[31m-{seq}", "U+001B", 8),
        ("{seq}\x7f", "U+007F", 5),
        ("{seq}-\x85", "U+0085", 6),
        ("{seq}{{\x9f}}", "U+009F", 7),
    ],
)
def test_control_characters_in_literal_text(source: str, character: str, position: int) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(source)
    assert f"control character {character} at position {position}" in str(caught.value)


def test_printable_text_beyond_ascii_is_literal() -> None:
    assert render("Nº\u00a0{seq}\u2009✓") == "Nº\u00a042\u2009✓"


def test_template_error_is_a_value_error() -> None:
    assert issubclass(TemplateError, ValueError)
    assert issubclass(VariableError, ValueError)
    assert issubclass(NumberTooLong, ValueError)


def test_source_length_limit() -> None:
    at_limit = "{seq}" + "x" * (MAX_TEMPLATE_LENGTH - len("{seq}"))
    assert parse_template(at_limit).source == at_limit
    with pytest.raises(TemplateError, match="201 characters long; the limit is 200"):
        parse_template(at_limit + "x")


# Variables at render time


def test_variables_are_substituted() -> None:
    number = render("{var:dept}-{var:site}-{seq}", variables={"dept": "A_1", "site": "b-2"})
    assert number == "A_1-b-2-42"


def test_extra_variables_are_ignored() -> None:
    assert render("{var:dept}-{seq}", variables={"dept": "x", "unused": "bad value!"}) == "x-42"
    assert render("{seq}", variables={"unused": ""}) == "42"


@pytest.mark.parametrize("variables", [None, {}, {"site": "x"}])
def test_missing_variable(variables: Mapping[str, str] | None) -> None:
    with pytest.raises(VariableError, match="missing variable 'dept'"):
        render("{var:dept}-{seq}", variables=variables)


@pytest.mark.parametrize("value", ["", "two words", "a" * 33, "dépt", "x\n", "a/b", "{seq}"])
def test_invalid_variable_value(value: str) -> None:
    with pytest.raises(VariableError, match="variable 'dept' must be"):
        render("{var:dept}-{seq}", variables={"dept": value})


def test_variable_errors_do_not_echo_the_value() -> None:
    with pytest.raises(VariableError) as caught:
        render("{var:dept}-{seq}", variables={"dept": "<script>"})
    assert "script" not in str(caught.value)


def test_longest_variable_value_is_accepted() -> None:
    assert render("{var:dept}{seq}", variables={"dept": "a" * 32}) == "a" * 32 + "42"


# Rendering limits


def test_number_too_long() -> None:
    template = parse_template("{var:a}{var:b}{seq}")
    longest = {"a": "a" * 32, "b": "b" * 31}
    assert len(template.render(1, date=DAY, series="S", variables=longest)) == MAX_NUMBER_LENGTH
    with pytest.raises(NumberTooLong, match="65 characters long; the limit is 64"):
        template.render(10, date=DAY, series="S", variables=longest)


def test_negative_value_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        render("{seq}", -1)


@pytest.mark.parametrize("start", [0, 13])
def test_fiscal_year_start_must_be_a_month(start: int) -> None:
    with pytest.raises(ValueError, match="month"):
        render("{seq}", fiscal_year_start=start)


# check_template: counter periods


@pytest.mark.parametrize(
    ("source", "reset", "start"),
    [
        ("{seq}", "never", 1),
        ("{seq}", "never", 4),
        ("{YYYY}-{seq}", "yearly", 1),
        ("{YY}-{seq}", "yearly", 1),
        ("{FY}-{seq}", "yearly", 1),
        ("{FY}-{seq}", "yearly", 4),
        ("{YYYY}-{FY}-{seq}", "yearly", 4),
        ("INV/{FY:YYYY-YY}/{seq}", "yearly", 4),
        ("INV/{FY:YY-YY}/{seq}", "yearly", 4),
        ("{FY:YY-YY}{seq}", "yearly", 1),
        ("{YYYY}{MM}-{seq}", "monthly", 1),
        ("{YY}{MM}-{seq}", "monthly", 4),
        ("{YYYY}{MM}{DD}-{seq}", "daily", 1),
        ("{DD}.{MM}.{YY}-{seq}", "daily", 7),
        ("{YYYY}{MM}{DD}-{seq}", "yearly", 1),
    ],
)
def test_templates_that_tell_periods_apart(source: str, reset: str, start: int) -> None:
    check_template(
        parse_template(source), reset=reset, fiscal_year_start=start, series="S", max_value=None
    )


@pytest.mark.parametrize(
    ("source", "reset", "start", "message"),
    [
        ("{seq}", "yearly", 1, "a yearly reset needs {YYYY}, {YY} or {FY}"),
        ("{MM}{DD}{Q}-{seq}", "yearly", 1, "a yearly reset needs"),
        ("{YYYY}-{seq}", "yearly", 4, "fiscal year starting in month 4 needs {FY}"),
        ("{YY}-{seq}", "yearly", 12, "fiscal year starting in month 12 needs {FY}"),
        ("{YYYY}-{seq}", "monthly", 1, "a monthly reset needs"),
        ("{MM}-{seq}", "monthly", 1, "a monthly reset needs"),
        ("{FY}{MM}-{seq}", "monthly", 1, "a monthly reset needs"),
        ("{FY:YYYY-YY}{MM}-{seq}", "monthly", 4, "a monthly reset needs"),
        ("{YYYY}-{seq}", "yearly", 4, "or {FY:YYYY-YY} or {FY:YY-YY}"),
        ("{YYYY}{Q}-{seq}", "monthly", 1, "a monthly reset needs"),
        ("{YYYY}{MM}-{seq}", "daily", 1, "a daily reset needs"),
        ("{YYYY}{DD}-{seq}", "daily", 1, "a daily reset needs"),
        ("{MM}{DD}-{seq}", "daily", 1, "a daily reset needs"),
    ],
)
def test_templates_that_could_repeat_across_periods(
    source: str, reset: str, start: int, message: str
) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        check_template(
            parse_template(source), reset=reset, fiscal_year_start=start, series="S", max_value=None
        )


# check_template: variables next to the counter


def check(source: str, *, variables_in_key: bool = True) -> None:
    check_template(
        parse_template(source),
        reset="never",
        fiscal_year_start=1,
        series="S",
        max_value=None,
        variables_in_key=variables_in_key,
    )


@pytest.mark.parametrize(
    "source",
    [
        "{var:a}{seq}",
        "{seq}{var:a}",
        "{var:a}{seq:06}",
        "{var:a}2026{seq}",
        "{seq}00{var:a}",
        "{var:a}{YYYY}{seq}",
        "{var:a}{MM}{DD}{seq}",
        "{seq}{FY}{var:a}",
        "{var:a}{series}{seq}",
        "X-{var:a}-{var:b}{seq}",
        "{var:a}/{seq}{var:b}",
    ],
)
def test_variable_and_counter_need_a_non_digit_between(source: str) -> None:
    with pytest.raises(TemplateError, match="need literal text with a non-digit between them"):
        check(source)


@pytest.mark.parametrize(
    "source",
    [
        "{var:a}-{seq}",
        "{seq}/{var:a}",
        "{var:a}-{YYYY}{seq}",
        "{var:a}{YYYY}x{seq:04}",
        "{seq}{MM}.{var:a}",
        "{var:a}{{{seq}",
        "{var:a}1a2{seq}",
        "{var:a}-{seq}/{var:b}",
        "{var:a}/{seq}-{var:b}",
        "{var:a}-{seq}-{YYYY} {var:b}",
    ],
)
def test_separated_variables_are_accepted(source: str) -> None:
    check(source)


@pytest.mark.parametrize("source", ["{var:a}-{seq}-{var:b}", "{var:a}.{seq}_{YY}{var:b}"])
def test_variables_on_both_sides_need_a_bounding_character(source: str) -> None:
    with pytest.raises(TemplateError, match="both sides"):
        check(source)


def test_variables_on_both_sides_would_repeat_numbers() -> None:
    """Why that rule exists: the counter's digits can move into either variable."""
    template = parse_template("{var:a}-{seq}-{var:b}")
    first = template.render(2, date=DAY, series="S", variables={"a": "x-1", "b": "y"})
    second = template.render(1, date=DAY, series="S", variables={"a": "x", "b": "2-y"})
    assert first == second == "x-1-2-y"


def test_adjacent_variable_would_repeat_numbers() -> None:
    """Why the rule exists: without a separator, two issues read the same."""
    template = parse_template("{var:a}{seq}")
    first = template.render(23, date=DAY, series="S", variables={"a": "1"})
    second = template.render(3, date=DAY, series="S", variables={"a": "12"})
    assert first == second == "123"


# check_template: length


def fits(source: str, *, series: str = "S", max_value: int | None = None) -> bool:
    try:
        check_template(
            parse_template(source),
            reset="never",
            fiscal_year_start=1,
            series=series,
            max_value=max_value,
        )
    except TemplateError:
        return False
    return True


def test_unbounded_counter_counts_as_19_digits() -> None:
    assert fits("x" * 45 + "{seq}")
    assert not fits("x" * 46 + "{seq}")


def test_max_value_bounds_the_counter_width() -> None:
    assert fits("x" * 58 + "{seq}", max_value=999_999)
    assert not fits("x" * 59 + "{seq}", max_value=999_999)


def test_padding_wider_than_the_counter_counts() -> None:
    assert fits("x" * 44 + "{seq:020}", max_value=9)
    assert not fits("x" * 45 + "{seq:020}", max_value=9)


def test_series_name_counts() -> None:
    assert fits("{series}{seq}", series="S" * 45)
    assert not fits("{series}{seq}", series="S" * 46)


def test_variables_count_as_one_character() -> None:
    assert fits("x" * 43 + "{var:a}-{seq}")
    assert not fits("x" * 44 + "{var:a}-{seq}")


def test_date_tokens_count_at_full_width() -> None:
    every = "{YYYY}{YY}{MM}{DD}{Q}{FY}"  # 4 + 2 + 2 + 2 + 1 + 4 = 15
    assert fits("x" * 30 + every + "{seq}")
    assert not fits("x" * 31 + every + "{seq}")


def test_too_long_message() -> None:
    with pytest.raises(TemplateError, match="can be 65 characters long; the limit is 64"):
        check_template(
            parse_template("x" * 46 + "{seq}"),
            reset="never",
            fiscal_year_start=1,
            series="S",
            max_value=None,
        )


@pytest.mark.parametrize(
    ("reset", "start", "max_value"),
    [("weekly", 1, None), ("never", 0, None), ("never", 13, None), ("never", 1, -1)],
)
def test_invalid_series_settings(reset: str, start: int, max_value: int | None) -> None:
    with pytest.raises(ValueError) as caught:
        check_template(
            parse_template("{seq}"),
            reset=reset,
            fiscal_year_start=start,
            series="S",
            max_value=max_value,
        )
    assert not isinstance(caught.value, TemplateError)


# Properties


def escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


names = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
printable = st.characters(exclude_categories=["Cc", "Cs"])
literals = st.text(printable, max_size=12).map(escape)
seq_tokens = st.one_of(
    st.just("{seq}"), st.integers(min_value=1, max_value=20).map(lambda n: f"{{seq:0{n}}}")
)
other_tokens = st.one_of(
    st.sampled_from([f"{{{name}}}" for name in DATE_TOKENS] + ["{series}"]),
    names.map(lambda name: f"{{var:{name}}}"),
)


@st.composite
def sources(draw: st.DrawFn, max_pieces: int = 8) -> str:
    pieces = draw(st.lists(st.one_of(literals, other_tokens), max_size=max_pieces))
    pieces.insert(draw(st.integers(min_value=0, max_value=len(pieces))), draw(seq_tokens))
    source = "".join(pieces)
    assume(len(source) <= MAX_TEMPLATE_LENGTH)
    return source


def some_variables(template: Template) -> dict[str, str]:
    return {name: "v" for name in template.variables}


@given(sources())
def test_parse_of_str_round_trips(source: str) -> None:
    template = parse_template(source)
    assert str(template) == source
    assert parse_template(str(template)) == template


@given(st.text(max_size=MAX_TEMPLATE_LENGTH + 10))
def test_any_text_parses_or_raises_template_error(source: str) -> None:
    try:
        template = parse_template(source)
    except TemplateError:
        return
    assert str(template) == source


@given(
    sources(),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.dates(),
    st.integers(min_value=1, max_value=12),
)
def test_distinct_values_render_distinct_numbers(
    source: str, a: int, b: int, day: datetime.date, start: int
) -> None:
    assume(a != b)
    template = parse_template(source)

    def number(value: int) -> str:
        return template.render(
            value,
            date=day,
            series="S",
            variables=some_variables(template),
            fiscal_year_start=start,
        )

    try:
        assert number(a) != number(b)
    except NumberTooLong:
        assume(False)


# Short digit runs next to the counter are what make numbers ambiguous, so draw them often.
separators = st.one_of(st.sampled_from(["-", "0", "12", "x", "/", "9a"]), literals)
fixed_tokens = st.sampled_from([f"{{{name}}}" for name in DATE_TOKENS] + ["{series}"])


@st.composite
def one_sided_sources(draw: st.DrawFn) -> str:
    """Templates whose variables (at most "a" and "b") all sit on one side of the counter."""
    side = draw(
        st.lists(
            st.one_of(separators, fixed_tokens, st.sampled_from(["{var:a}", "{var:b}"])), max_size=4
        )
    )
    rest = draw(st.lists(st.one_of(separators, fixed_tokens), max_size=3))
    seq = draw(seq_tokens)
    pieces = [*side, seq, *rest] if draw(st.booleans()) else [*rest, seq, *side]
    source = "".join(pieces)
    assume(len(source) <= MAX_TEMPLATE_LENGTH)
    return source


# Short separators, soft ("-") and hard ("/"), so that both verdicts of the rule come up often.
between_variables = st.sampled_from(["-", "/", "-0", ".-", " "])


@st.composite
def two_sided_sources(draw: st.DrawFn) -> str:
    """Templates with "{var:a}" before the counter and "{var:b}" after it."""
    outer = st.lists(st.one_of(separators, fixed_tokens), max_size=2)
    pieces = [
        *draw(outer),
        "{var:a}",
        draw(between_variables),
        draw(seq_tokens),
        draw(between_variables),
        "{var:b}",
        *draw(outer),
    ]
    return "".join(pieces)


# Values that can pass digits to and from a neighbouring counter.
AMBIGUOUS_VALUES = ("1", "12", "0", "23", "x", "y", "1-", "x-1", "2-y", "x-0")


@settings(max_examples=300, deadline=None)
@given(st.one_of(one_sided_sources(), two_sided_sources()), st.dates(), st.dates())
def test_checked_templates_never_repeat_a_value_whatever_the_variables(
    source: str, day_a: datetime.date, day_b: datetime.date
) -> None:
    """Every value 0..129, every mix of ambiguous variables, two dates: no number twice."""
    template = parse_template(source)
    try:
        check(source)
    except TemplateError:
        return  # rejected templates promise nothing
    names = sorted(template.variables)
    seen: dict[str, int] = {}
    for values in itertools.product(AMBIGUOUS_VALUES, repeat=len(names)):
        variables = dict(zip(names, values, strict=True))
        for day in (day_a, day_b):
            for value in range(130):
                number = template.render(value, date=day, series="S", variables=variables)
                assert seen.setdefault(number, value) == value, (number, variables)


@given(st.integers(min_value=1, max_value=20), st.integers(min_value=0, max_value=2**63 - 1))
def test_padding_width(width: int, value: int) -> None:
    digits = render(f"{{seq:0{width}}}", value)
    assert len(digits) == max(width, len(str(value)))
    assert digits.isdigit()
    assert int(digits) == value


# {YY} repeats every hundred years, so the guarantee only covers one century.
century = st.dates(min_value=datetime.date(2000, 1, 1), max_value=datetime.date(2099, 12, 31))


@st.composite
def series_settings(draw: st.DrawFn) -> tuple[Template, Reset, int]:
    reset: Reset = draw(st.sampled_from(["yearly", "monthly", "daily"]))
    start = draw(st.integers(min_value=1, max_value=12))
    extra = draw(st.permutations(DATE_TOKENS))[: draw(st.integers(min_value=1, max_value=6))]
    source = draw(sources(max_pieces=3)) + "".join(f"{{{name}}}" for name in extra)
    assume(len(source) <= MAX_TEMPLATE_LENGTH)
    return parse_template(source), reset, start


@settings(max_examples=300, deadline=None)
@given(
    series_settings(),
    century,
    st.integers(min_value=-400, max_value=400),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=0, max_value=2**63 - 1),
)
def test_checked_templates_never_repeat_across_periods(
    series: tuple[Template, Reset, int], a: datetime.date, days_apart: int, x: int, y: int
) -> None:
    template, reset, start = series
    try:
        check_template(template, reset=reset, fiscal_year_start=start, series="S", max_value=None)
    except TemplateError:
        return  # rejected templates promise nothing
    # Nearby dates are where periods are easiest to confuse: adjacent months,
    # days, or fiscal years within one calendar year.
    b = a + datetime.timedelta(days=days_apart)
    if b.year >= 2100 or period_key(reset, a, start) == period_key(reset, b, start):
        return

    def number(value: int, day: datetime.date) -> str:
        return template.render(
            value, date=day, series="S", variables=some_variables(template), fiscal_year_start=start
        )

    try:
        assert number(x, a) != number(x, b)
        assert number(x, a) != number(y, b)
    except NumberTooLong:
        return


# Collisions: one string rendered for two issues


def collision(old: str, new: str, *, variables_in_key: bool = True) -> Collision | None:
    return find_collision(
        parse_template(old), parse_template(new), series="S", variables_in_key=variables_in_key
    )


def renders(source: str, number: str, variables: Mapping[str, str] | None = None) -> set[int]:
    """The values 0..199 that `source` renders as `number` on DAY."""
    template = parse_template(source)
    return {
        value
        for value in range(200)
        if template.render(value, date=DAY, series="S", variables=variables) == number
    }


def test_a_format_change_that_moves_the_counter_digits_collides() -> None:
    found = collision("F-1{seq}", "F-{seq}")
    assert found is not None
    assert renders("F-1{seq}", found.number) != renders("F-{seq}", found.number)
    assert renders("F-1{seq}", found.number) and renders("F-{seq}", found.number)
    assert found.reason == (
        f"'{found.number}' could be rendered by 'F-1{{seq}}' "
        f"(value {found.number[3:]}) and by 'F-{{seq}}' (value {found.number[2:]})"
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("INV-{YYYY}-{seq:04}", "INV-{YYYY}-{seq:06}"),
        ("INV-{seq}", "INV/{seq}"),
        ("PO-{seq}", "PO-{var:branch}-{seq}"),
        ("{series}-{seq}", "S-{seq}"),
        ("{YYYY}-{seq}", "{YY}-{seq}"),
    ],
)
def test_format_changes_whose_common_numbers_are_the_same_issue_do_not_collide(
    old: str, new: str
) -> None:
    assert collision(old, new) is None
    assert collision(new, old) is None


def test_renaming_a_variable_collides_only_with_a_counter_per_variable() -> None:
    found = collision("{var:a}-{seq}", "{var:b}-{seq}")
    assert found is not None
    assert "'{var:a}-{seq}'" in found.reason and "'{var:b}-{seq}'" in found.reason
    assert collision("{var:a}-{seq}", "{var:b}-{seq}", variables_in_key=False) is None


def test_swapping_date_tokens_collides_because_the_period_changes() -> None:
    found = collision("{YY}{MM}-{seq}", "{MM}{YY}-{seq}")
    assert found is not None
    assert "{YY}=" in found.reason and "{MM}=" in found.reason


@pytest.mark.parametrize(
    "source",
    [
        "INV-{YYYY}-{seq:06}",
        "PO-{var:branch}-{seq:04}",
        "{var:a}/{seq}-{var:b}",
        "{var:a}-{seq}/{var:b}",
        "{var:a}1a2{seq}",
        "{var:a}{YYYY}x{seq:04}",
        "{var:a}-{seq}-{YYYY} {var:b}",
        "{series}/{YYYY}/{YY}/{MM}/{DD}/Q{Q}/FY{FY}/{var:dept}/{seq}",
        "{YYYY}{MM}{DD}{seq}{Q}",
    ],
)
@pytest.mark.parametrize("variables_in_key", [True, False])
def test_an_unambiguous_template_never_collides_with_itself(
    source: str, variables_in_key: bool
) -> None:
    template = parse_template(source)
    assert find_collision(template, template, series="S", variables_in_key=variables_in_key) is None
    check(source, variables_in_key=variables_in_key)


def test_adjacent_variables_are_ambiguous_only_with_a_counter_per_variable() -> None:
    template = parse_template("{var:a}{var:b}-{seq}")
    found = find_collision(template, template, series="S", variables_in_key=True)
    assert found is not None
    # Why: two counters, each at value 1, would render the same number.
    first = template.render(1, date=DAY, series="S", variables={"a": "x", "b": "yz"})
    second = template.render(1, date=DAY, series="S", variables={"a": "xy", "b": "z"})
    assert first == second
    assert find_collision(template, template, series="S", variables_in_key=False) is None


@pytest.mark.parametrize("source", ["{var:a}{var:b}-{seq}", "{var:a}-{var:b}-{seq}"])
def test_check_template_refuses_an_ambiguous_template_with_a_counter_per_variable(
    source: str,
) -> None:
    with pytest.raises(TemplateError, match="the template is ambiguous") as caught:
        check(source)
    assert f"'{source}'" in str(caught.value)
    check(source, variables_in_key=False)


# Collisions: soundness, checked by rendering


PAIR_SERIES = "a-1"
# Short pieces made of characters that variables and counters can also produce.
pair_literals = st.text(st.sampled_from("01-/xa"), min_size=1, max_size=2)
pair_tokens = st.sampled_from(
    ["{YY}", "{YYYY}", "{MM}", "{FY:YY-YY}", "{var:a}", "{var:b}", "{series}"]
)
pair_seqs = st.sampled_from(["{seq}", "{seq:02}", "{seq:03}"])
pair_pieces = st.one_of(pair_literals, pair_tokens)


@st.composite
def piece_lists(draw: st.DrawFn) -> list[str]:
    pieces = draw(st.lists(pair_pieces, max_size=3))
    pieces.insert(draw(st.integers(min_value=0, max_value=len(pieces))), draw(pair_seqs))
    return pieces


# Changes that keep most of a format, so that old and new share numbers.
RENAMED = {"{var:a}": "{var:b}", "{var:b}": "{var:a}", "{YY}": "{MM}", "{MM}": "{YY}"}


@st.composite
def template_pairs(draw: st.DrawFn) -> tuple[Template, Template]:
    """An old format and a new one: unrelated, the same, or slightly changed."""
    old = draw(piece_lists())
    new = list(old)
    change = draw(
        st.sampled_from(["unrelated", "same", "replaced", "inserted", "seq", "swapped", "renamed"])
    )
    at = draw(st.integers(min_value=0, max_value=len(new) - 1))
    if change == "unrelated":
        new = draw(piece_lists())
    elif change == "replaced" and not new[at].startswith("{seq"):
        new[at] = draw(pair_pieces)
    elif change == "inserted":
        new.insert(at, draw(pair_pieces))
    elif change == "seq":
        new = [draw(pair_seqs) if piece.startswith("{seq") else piece for piece in new]
    elif change == "swapped" and at > 0:
        new[at - 1], new[at] = new[at], new[at - 1]
    elif change == "renamed":
        new = [RENAMED.get(piece, piece) for piece in new]
    return parse_template("".join(old)), parse_template("".join(new))


# Each date token's rendering: "0" stands for any digit, anything else for itself.
DATE_SHAPES = {
    "YYYY": "0000",
    "YY": "00",
    "MM": "00",
    "DD": "00",
    "Q": "0",
    "FY": "0000",
    "FY:YYYY-YY": "0000-00",
    "FY:YY-YY": "00-00",
}


def grammar(template: Template, series: str) -> re.Pattern[str]:
    """Every string `template` can render, whatever the value, date and variables."""
    pieces = []
    for part in template.parts:
        if isinstance(part, str):
            pieces.append(re.escape(part))
        elif isinstance(part, Seq):
            width = part.pad or 1
            pieces.append(f"(?:[0-9]{{{width}}}|[1-9][0-9]{{{width},}})")
        elif isinstance(part, DatePart):
            shape = re.escape(DATE_SHAPES[part.name])
            pieces.append(shape.replace("0", "[0-9]"))
        elif isinstance(part, SeriesName):
            pieces.append(re.escape(series))
        else:
            pieces.append("[A-Za-z0-9_-]{1,32}")
    return re.compile("".join(pieces))


def tells_periods_apart(template: Template, reset: Reset) -> bool:
    """check_template's period rule, for the resets and tokens the pairs use."""
    used = template.uses()
    has_year = bool(used & {"YY", "YYYY"})
    has_fiscal_year = bool(used & {"FY", "FY:YYYY-YY", "FY:YY-YY"})
    return (
        reset == "never"
        or (has_year and (reset == "yearly" or "MM" in used))
        or (reset == "yearly" and has_fiscal_year)
    )


# Months and years apart, a year and a month that trade places ("0312" is March 2012 as
# {MM}{YY} and December 2003 as {YY}{MM}), and a century apart where no two-digit-year
# window forbids it.
PAIR_DATES = (
    datetime.date(2026, 3, 5),
    datetime.date(2026, 4, 5),
    datetime.date(2027, 3, 5),
    datetime.date(2003, 12, 5),
    datetime.date(2012, 3, 5),
    datetime.date(1926, 3, 5),
)
# Values that can trade characters with a neighbouring counter, literal or variable.
PAIR_VALUES = ("x", "1", "x-1", "1-", "a0", "-0")


Issue = tuple[int, str, tuple[tuple[str, str], ...]]


def issues_by_number(
    template: Template, reset: Reset, dates: list[datetime.date], variables_in_key: bool
) -> dict[str, set[Issue]]:
    """Every number the template renders for values 0..120, with the issues behind it."""
    names = sorted(template.variables)
    found: dict[str, set[Issue]] = defaultdict(set)
    for values in itertools.product(PAIR_VALUES, repeat=len(names)):
        variables = dict(zip(names, values, strict=True))
        key = tuple(variables.items()) if variables_in_key else ()
        for day in dates:
            period = period_key(reset, day)
            numbers = template.render_many(
                range(121), date=day, series=PAIR_SERIES, variables=variables
            )
            for value, number in enumerate(numbers):
                found[number].add((value, period, key))
    return found


@settings(max_examples=500, deadline=None)
@given(template_pairs(), st.booleans(), st.data())
def test_find_collision_never_misses_a_number_rendered_for_two_issues(
    pair: tuple[Template, Template], variables_in_key: bool, data: st.DataObject
) -> None:
    old, new = pair
    resets: list[Reset] = [
        reset
        for reset in ("never", "yearly", "monthly")
        if tells_periods_apart(old, reset) and tells_periods_apart(new, reset)
    ]
    reset = data.draw(st.sampled_from(resets))
    found = find_collision(old, new, series=PAIR_SERIES, variables_in_key=variables_in_key)
    if found is not None:
        # The example in the message is one both formats can really produce.
        assert grammar(old, PAIR_SERIES).fullmatch(found.number), found
        assert grammar(new, PAIR_SERIES).fullmatch(found.number), found
        return
    windows = [two_digit_year_window(t, reset) for t in (old, new)]
    dates = [
        day
        for day in PAIR_DATES
        if all(window is None or window[0] <= day <= window[1] for window in windows)
    ]
    by_old = issues_by_number(old, reset, dates, variables_in_key)
    by_new = issues_by_number(new, reset, dates, variables_in_key)
    for number in by_old.keys() & by_new.keys():
        assert len(by_old[number] | by_new[number]) == 1, (number, by_old[number], by_new[number])


# Two-digit years


@pytest.mark.parametrize(
    ("source", "reset"),
    [("{YY}-{seq}", "yearly"), ("{YY}{MM}-{seq}", "monthly"), ("{DD}.{MM}.{YY}-{seq}", "daily")],
)
def test_a_two_digit_year_that_tells_periods_apart_bounds_the_dates(
    source: str, reset: str
) -> None:
    window = two_digit_year_window(parse_template(source), reset)
    assert window == (datetime.date(2000, 1, 1), datetime.date(2099, 12, 31))


@pytest.mark.parametrize(
    ("source", "reset"),
    [
        ("{YY}-{seq}", "never"),
        ("{YYYY}-{YY}-{seq}", "yearly"),
        ("{FY}-{YY}-{seq}", "yearly"),
        ("{YYYY}{MM}-{seq}", "monthly"),
        ("{seq}", "never"),
    ],
)
def test_a_full_year_or_no_reset_leaves_the_dates_unbounded(source: str, reset: str) -> None:
    assert two_digit_year_window(parse_template(source), reset) is None


def test_a_two_digit_fiscal_year_label_bounds_the_dates_from_its_first_fiscal_year() -> None:
    """2000-01-15 is in fiscal year 1999 when it starts in July: "99-00", like 2099-07-15."""
    template = parse_template("{FY:YY-YY}/{seq}")
    window = two_digit_year_window(template, "yearly", 7)
    assert window == (datetime.date(2000, 7, 1), datetime.date(2099, 12, 31))
    earlier, later = datetime.date(2000, 1, 15), datetime.date(2099, 7, 15)
    assert render("{FY:YY-YY}/{seq}", date=earlier, fiscal_year_start=7) == render(
        "{FY:YY-YY}/{seq}", date=later, fiscal_year_start=7
    )
    assert not window[0] <= earlier <= window[1]
    assert two_digit_year_window(parse_template("{FY:YYYY-YY}/{seq}"), "yearly", 7) is None
    assert two_digit_year_window(parse_template("{YYYY}{FY:YY-YY}/{seq}"), "yearly", 7) is None


@pytest.mark.parametrize(
    ("old", "new", "collides"),
    [
        ("INV-{FY}-{seq}", "INV-{FY:YYYY-YY}-{seq}", False),
        ("INV/{FY:YY-YY}/{seq}", "INV/{FY:YYYY-YY}/{seq}", False),
        ("INV-{YY}-{MM}{seq}", "INV-{FY:YY-YY}{seq}", True),  # "INV-25-261"
        ("{YY}-{seq}", "{FY:YY-YY}{seq}", True),  # "25-261"
    ],
)
def test_fiscal_year_labels_take_part_in_the_format_history_check(
    old: str, new: str, collides: bool
) -> None:
    found = find_collision(
        parse_template(old), parse_template(new), series="S", variables_in_key=True
    )
    assert (found is not None) == collides, found


def test_a_two_digit_year_repeats_a_century_later() -> None:
    """Why the window exists: 1926 and 2026 are two periods with the same numbers."""
    template = parse_template("{YY}-{seq}")
    window = two_digit_year_window(template, "yearly")
    assert window is not None
    start, end = window
    earlier, later = datetime.date(1926, 3, 5), datetime.date(2026, 3, 5)
    assert template.render(1, date=earlier, series="S") == template.render(
        1, date=later, series="S"
    )
    assert start <= later <= end
    assert not start <= earlier <= end
