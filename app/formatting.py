"""Document number templates such as "INV-{YYYY}-{seq:06}".

A template is parsed and checked once, when a series is configured, and then
rendered for every number issued. Parsing therefore does all the validation and
leaves a flat tuple of parts, so that rendering is a single pass and a join.

Template language:

    text        copied as is; "{{" and "}}" stand for literal braces
    {seq}       the counter value; {seq:0N} pads it with zeros to N digits (1..20)
    {YYYY} {YY} year of the document date, 4 and 2 digits
    {MM} {DD}   month and day of the document date, 2 digits
    {Q}         calendar quarter of the document date, 1 to 4
    {FY}        fiscal year of the document date, labelled by its starting year
    {series}    the series name
    {var:NAME}  a variable supplied by the client when the number is issued
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import string
import typing
from collections.abc import Callable, Mapping, Sequence

from app.periods import RESETS, fiscal_year

MAX_NUMBER_LENGTH = 64
MAX_TEMPLATE_LENGTH = 200
MAX_PAD_WIDTH = 20

# Counters are signed 64-bit integers, so no value is wider than this.
LARGEST_COUNTER_VALUE = 2**63 - 1

_DATE_FORMATS: dict[str, Callable[[datetime.date, int], str]] = {
    "YYYY": lambda day, start: f"{day.year:04d}",
    "YY": lambda day, start: f"{day.year % 100:02d}",
    "MM": lambda day, start: f"{day.month:02d}",
    "DD": lambda day, start: f"{day.day:02d}",
    "Q": lambda day, start: str((day.month - 1) // 3 + 1),
    "FY": lambda day, start: f"{fiscal_year(day, start):04d}",
}
_DATE_WIDTHS = {"YYYY": 4, "YY": 2, "MM": 2, "DD": 2, "Q": 1, "FY": 4}

DATE_TOKENS: tuple[str, ...] = tuple(_DATE_FORMATS)

# One alphabet for variable names and values: safe in file names and URLs,
# and free of braces, so a value can never look like template syntax.
# ASCII classes on purpose: "\w" and "\d" would admit any Unicode letter or digit.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_ALPHABET = "1 to 32 characters from A-Z, a-z, 0-9, '_' and '-'"

_PADDING = re.compile(r"0([1-9][0-9]?)")

# Every character of a source falls into exactly one of these groups, so a
# scan with finditer covers the whole source.
_LEXEME = re.compile(
    r"(?P<escaped>\{\{|\}\})"
    r"|\{(?P<token>[^{}]*)\}"
    r"|(?P<stray>[{}])"
    r"|(?P<text>[^{}]+)"
)

# Unicode category Cc: C0 controls, DEL and C1 controls. Such characters are invisible or
# reshape the text around them, and PostgreSQL cannot even store NUL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_DIGITS = frozenset("0123456789")
# What a variable, a series name or a date can render: text outside it bounds them.
_SOFT = frozenset(string.ascii_letters + string.digits + "_.-")

_KNOWN_TOKENS = "{seq}, {seq:0N}, {YYYY}, {YY}, {MM}, {DD}, {Q}, {FY}, {series} or {var:NAME}"


class TemplateError(ValueError):
    """A template that cannot be used for a series.

    The message is user-facing: it is returned verbatim to the client.
    """


class VariableError(ValueError):
    """A template variable missing or malformed when a number is rendered.

    The message is user-facing. It names the variable but never echoes the
    supplied value.
    """


class NumberTooLong(ValueError):
    """A rendered number longer than MAX_NUMBER_LENGTH characters.

    Only variables can push a checked template over the limit, so the client
    can fix this by sending shorter values. The message is user-facing.
    """


@dataclasses.dataclass(frozen=True, slots=True)
class Seq:
    """The counter value, zero-padded to `pad` digits when `pad` is set."""

    pad: int | None = None

    def __str__(self) -> str:
        return "{seq}" if self.pad is None else f"{{seq:0{self.pad}}}"


@dataclasses.dataclass(frozen=True, slots=True)
class DatePart:
    """A part of the document date; `name` is one of DATE_TOKENS."""

    name: str

    def __str__(self) -> str:
        return f"{{{self.name}}}"


@dataclasses.dataclass(frozen=True, slots=True)
class SeriesName:
    """The name of the series the number is issued in."""

    def __str__(self) -> str:
        return "{series}"


@dataclasses.dataclass(frozen=True, slots=True)
class Variable:
    """A value the client supplies with each request."""

    name: str

    def __str__(self) -> str:
        return f"{{var:{self.name}}}"


Token: typing.TypeAlias = Seq | DatePart | SeriesName | Variable

# Literal text is kept unescaped, as it appears in the rendered number.
Part: typing.TypeAlias = str | Token


@dataclasses.dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: immutable, so one instance can serve every request.

    Build it with parse_template(), which guarantees that `parts` holds exactly
    one Seq and no empty or adjacent literal strings, and that
    str(template) == source.
    """

    source: str
    parts: tuple[Part, ...]
    variables: frozenset[str]

    def render(
        self,
        value: int,
        *,
        date: datetime.date,
        series: str,
        variables: Mapping[str, str] | None = None,
        fiscal_year_start: int = 1,
    ) -> str:
        """The document number for counter `value` on the document `date`.

        Distinct values always give distinct numbers for the same date and
        variables. Variables the template does not use are ignored.

        Raises VariableError when a variable the template uses is missing or
        outside the variable alphabet, NumberTooLong when the result exceeds
        MAX_NUMBER_LENGTH, and ValueError for a negative value or a
        fiscal_year_start that is not a month.
        """
        return self.render_many(
            [value],
            date=date,
            series=series,
            variables=variables,
            fiscal_year_start=fiscal_year_start,
        )[0]

    def render_many(
        self,
        values: Sequence[int],
        *,
        date: datetime.date,
        series: str,
        variables: Mapping[str, str] | None = None,
        fiscal_year_start: int = 1,
    ) -> list[str]:
        """The numbers of several values sharing one date and one set of variables.

        Everything but the counter is rendered once, so a batch of thousands
        costs little more than formatting its integers. Raises as render().
        """
        if not values:
            return []
        if min(values) < 0:
            raise ValueError(f"counter values are never negative, got {min(values)}")
        if not 1 <= fiscal_year_start <= 12:
            raise ValueError(
                f"fiscal_year_start must be a month from 1 to 12, not {fiscal_year_start!r}"
            )
        supplied: Mapping[str, str] = variables if variables is not None else {}
        before: list[str] = []
        after: list[str] = []
        pad = 0
        pieces = before
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, Seq):
                pad = part.pad or 0
                pieces = after
            elif isinstance(part, DatePart):
                pieces.append(_DATE_FORMATS[part.name](date, fiscal_year_start))
            elif isinstance(part, SeriesName):
                pieces.append(series)
            else:
                pieces.append(_variable_value(part.name, supplied))
        prefix, suffix = "".join(before), "".join(after)
        longest = len(prefix) + len(suffix) + max(pad, len(str(max(values))))
        if longest > MAX_NUMBER_LENGTH:
            raise NumberTooLong(
                f"the number would be {longest} characters long; the limit is {MAX_NUMBER_LENGTH}"
            )
        return [f"{prefix}{str(value).zfill(pad)}{suffix}" for value in values]

    def uses(self) -> frozenset[str]:
        """Which of the date tokens (DATE_TOKENS) appear in the template."""
        return frozenset(part.name for part in self.parts if isinstance(part, DatePart))

    def __str__(self) -> str:
        return "".join(_escape(part) if isinstance(part, str) else str(part) for part in self.parts)


def parse_template(source: str) -> Template:
    """Parse and validate a template source.

    Raises TemplateError for any source that could not render a number, or
    whose literal text holds a control character: the message names the
    problem and, where there is one, its 0-based position.
    Templates that parse may still be unsuitable for a given series; see
    check_template().
    """
    if len(source) > MAX_TEMPLATE_LENGTH:
        raise TemplateError(
            f"the template is {len(source)} characters long; the limit is {MAX_TEMPLATE_LENGTH}"
        )
    parts: list[Part] = []
    text: list[str] = []
    seq_found = False
    for lexeme in _LEXEME.finditer(source):
        position = lexeme.start()
        if lexeme["text"] is not None:
            control = _CONTROL.search(lexeme["text"])
            if control is not None:
                raise TemplateError(
                    f"control character U+{ord(control[0]):04X} at position "
                    f"{position + control.start()}; literal text must be printable"
                )
            text.append(lexeme["text"])
        elif lexeme["escaped"] is not None:
            text.append(lexeme["escaped"][0])
        elif lexeme["stray"] == "{":
            raise TemplateError(
                f"unclosed '{{' at position {position}; write '{{{{' for a literal brace"
            )
        elif lexeme["stray"] == "}":
            raise TemplateError(
                f"unmatched '}}' at position {position}; write '}}}}' for a literal brace"
            )
        else:
            token = _parse_token(lexeme["token"], position)
            if isinstance(token, Seq):
                if seq_found:
                    raise TemplateError(
                        f"second {{seq}} token at position {position}; "
                        f"the template needs exactly one"
                    )
                seq_found = True
            if text:
                parts.append("".join(text))
                text = []
            parts.append(token)
    if text:
        parts.append("".join(text))
    if not seq_found:
        raise TemplateError("the template needs a {seq} token")
    variables = frozenset(part.name for part in parts if isinstance(part, Variable))
    return Template(source=source, parts=tuple(parts), variables=variables)


def check_template(
    template: Template,
    *,
    reset: str,
    fiscal_year_start: int,
    series: str,
    max_value: int | None,
) -> None:
    """Check that `template` suits a series with these settings.

    Raises TemplateError when numbers from two different counter periods could
    be identical (the counter restarts, so the date must tell them apart), when
    a {var:NAME} token and {seq} are not separated by literal text holding a
    non-digit (with "{var:a}{seq}", a="1" and 23 read like a="12" and 3), or
    when the fixed part of a number is already too long: the longest counter
    value (`max_value`, or the largest 64-bit value when unbounded) with every
    variable at a single character must fit in MAX_NUMBER_LENGTH.

    A template that passes gives distinct numbers for distinct (period, value)
    pairs with the same variables, all date tokens having a fixed width. {YY}
    counts as a year, so that guarantee holds within a century. Distinct values
    also give distinct numbers whatever the variables and dates: when every
    variable sits on one side of {seq}, the separator's last (or first)
    non-digit marks where the counter's digits begin (or end). With variables
    on both sides ("{var:a}-{seq}-{var:b}": a="x-1", 2, b="y" reads like a="x",
    1, b="2-y"), one side must be bounded by a character that no variable,
    series name or date can contain (such as '/'), so that counting those
    characters from that end finds the counter.

    Raises ValueError for an unknown reset, a fiscal_year_start that is not a
    month or a negative max_value; callers validate those beforehand.
    """
    if reset not in RESETS:
        raise ValueError(f"unknown reset {reset!r}; expected one of {', '.join(RESETS)}")
    if not 1 <= fiscal_year_start <= 12:
        raise ValueError(
            f"fiscal_year_start must be a month from 1 to 12, not {fiscal_year_start!r}"
        )
    if max_value is not None and max_value < 0:
        raise ValueError(f"max_value must not be negative, got {max_value}")

    used = template.uses()
    has_year = bool(used & {"YYYY", "YY"})
    if reset == "yearly" and fiscal_year_start != 1 and "FY" not in used:
        raise TemplateError(
            f"a yearly reset with a fiscal year starting in month {fiscal_year_start} "
            f"needs {{FY}} in the template, "
            f"or numbers from different fiscal years could repeat"
        )
    if reset == "yearly" and not (has_year or "FY" in used):
        raise TemplateError(
            "a yearly reset needs {YYYY}, {YY} or {FY} in the template, "
            "or numbers from different years could repeat"
        )
    if reset == "monthly" and not (has_year and "MM" in used):
        raise TemplateError(
            "a monthly reset needs {YYYY} or {YY}, and {MM} in the template, "
            "or numbers from different months could repeat"
        )
    if reset == "daily" and not (has_year and "MM" in used and "DD" in used):
        raise TemplateError(
            "a daily reset needs {YYYY} or {YY}, {MM} and {DD} in the template, "
            "or numbers from different days could repeat"
        )

    _check_separated(template)
    _check_bounded(template)
    longest = _longest_rendering(template, series=series, max_value=max_value)
    if longest > MAX_NUMBER_LENGTH:
        raise TemplateError(
            f"numbers from this template can be {longest} characters long; "
            f"the limit is {MAX_NUMBER_LENGTH}"
        )


def _check_separated(template: Template) -> None:
    """Every variable needs a non-digit in the literal text between it and {seq}."""
    seq_at = next(i for i, part in enumerate(template.parts) if isinstance(part, Seq))
    for at, part in enumerate(template.parts):
        if not isinstance(part, Variable):
            continue
        between = template.parts[min(at, seq_at) + 1 : max(at, seq_at)]
        if not any(isinstance(piece, str) and set(piece) - _DIGITS for piece in between):
            raise TemplateError(
                f"{part} and {template.parts[seq_at]} need literal text with a non-digit "
                f"between them (such as '-'), or different values could read the same"
            )


def _check_bounded(template: Template) -> None:
    """Variables on both sides of {seq}: one side needs a character variables cannot hold."""
    seq_at = next(i for i, part in enumerate(template.parts) if isinstance(part, Seq))
    before = [i for i, part in enumerate(template.parts[:seq_at]) if isinstance(part, Variable)]
    after = [
        i for i, part in enumerate(template.parts) if i > seq_at and isinstance(part, Variable)
    ]
    if not before or not after:
        return
    sides = (template.parts[before[-1] + 1 : seq_at], template.parts[seq_at + 1 : after[0]])
    if not any(isinstance(piece, str) and set(piece) - _SOFT for side in sides for piece in side):
        raise TemplateError(
            "with {var:...} tokens on both sides of {seq}, the literal text on one side must "
            "hold a character that variables cannot contain (such as '/' or ' '), "
            "or different values could read the same"
        )


def _parse_token(body: str, position: int) -> Token:
    if body == "seq":
        return Seq()
    if body.startswith("seq:"):
        padding = _PADDING.fullmatch(body[len("seq:") :])
        if padding is None or int(padding[1]) > MAX_PAD_WIDTH:
            raise TemplateError(
                f"invalid padding in '{{{body}}}' at position {position}; "
                f"use {{seq:0N}} with N from 1 to {MAX_PAD_WIDTH}"
            )
        return Seq(pad=int(padding[1]))
    if body in _DATE_FORMATS:
        return DatePart(body)
    if body == "series":
        return SeriesName()
    if body.startswith("var:"):
        name = body[len("var:") :]
        if _NAME.fullmatch(name) is None:
            raise TemplateError(
                f"invalid variable name in '{{{body}}}' at position {position}; "
                f"names are {_ALPHABET}"
            )
        return Variable(name)
    raise TemplateError(
        f"unknown token '{{{body}}}' at position {position}; expected {_KNOWN_TOKENS}"
    )


def _variable_value(name: str, supplied: Mapping[str, str]) -> str:
    value = supplied.get(name)
    if value is None:
        raise VariableError(f"missing variable '{name}'")
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise VariableError(f"variable '{name}' must be {_ALPHABET}")
    return value


def _longest_rendering(template: Template, *, series: str, max_value: int | None) -> int:
    counter_digits = len(str(LARGEST_COUNTER_VALUE if max_value is None else max_value))
    length = 0
    for part in template.parts:
        if isinstance(part, str):
            length += len(part)
        elif isinstance(part, Seq):
            length += max(part.pad or 0, counter_digits)
        elif isinstance(part, DatePart):
            length += _DATE_WIDTHS[part.name]
        elif isinstance(part, SeriesName):
            length += len(series)
        else:
            length += 1
    return length


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")
