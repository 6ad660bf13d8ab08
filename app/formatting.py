"""Document number templates such as "INV-{YYYY}-{seq:06}".

A template is parsed and checked once, when a series is configured, and then
rendered for every number issued. Parsing therefore does all the validation and
leaves a flat tuple of parts, so that rendering is a single pass and a join.

Template language:

    text        copied as is; "{{" and "}}" stand for literal braces
    {seq}       the counter value; {seq:0N} pads it with zeros to N digits (1..20)
    {YYYY}      year of the document date, 4 digits
    {YY}        the year within 2000-2099, 2 digits: when it is the only year in the
                template and the counter resets, only dates in that century can be told
                apart, so the service refuses the others (two_digit_year_window())
    {MM} {DD}   month and day of the document date, 2 digits
    {Q}         calendar quarter of the document date, 1 to 4
    {FY}        fiscal year of the document date, labelled by its starting year
    {series}    the series name
    {var:NAME}  a variable supplied by the client when the number is issued

An issue is a counter value taken from a counter, whose key is the period of the
document date and, unless the series shares one counter across variables, the
values of the template's variables. The promise is that a series never renders
one string for two issues, even across format changes, where the old format
stays live for documents dated before the change. find_collision() decides
that for two templates (or one template against itself: its ambiguity); see
its docstring for why the answer can be trusted.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import functools
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

# The dates whose two-digit year names the year: see two_digit_year_window().
_TWO_DIGIT_CENTURY = (datetime.date(2000, 1, 1), datetime.date(2099, 12, 31))

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

    def parse(self, number: str, *, series: str) -> Parsed | None:
        """What ``number`` reads as under this template, or None when it cannot be one of its
        renderings: the counter value, the digits of each date token and the variables.

        For a template that check_template() accepted, a string has at most one reading that
        differs in value or dates (else two issues would render alike), so the first reading
        found is the one: render() of its value, a date with those digits and its variables
        gives ``number`` back. A date token's digits are read, not checked: the caller compares
        them with the document's date (a month "13" reads, and matches no date).
        """
        if len(number) > MAX_NUMBER_LENGTH:
            return None
        found = _reader(self, series).fullmatch(number)
        if found is None:
            return None
        groups = found.groupdict()
        return Parsed(
            value=int(groups["seq"]),
            dates={name: groups[f"d_{name}"] for name in self.uses()},
            variables={name: groups[f"v_{name}"] for name in self.variables},
        )

    def uses(self) -> frozenset[str]:
        """Which of the date tokens (DATE_TOKENS) appear in the template."""
        return frozenset(part.name for part in self.parts if isinstance(part, DatePart))

    def __str__(self) -> str:
        return "".join(_escape(part) if isinstance(part, str) else str(part) for part in self.parts)


@dataclasses.dataclass(frozen=True, slots=True)
class Parsed:
    """A number read back: its counter value, the digits of each date token by name (as
    DATE_TOKENS names them) and the value of each variable."""

    value: int
    dates: dict[str, str]
    variables: dict[str, str]


@functools.lru_cache(maxsize=1024)
def _reader(template: Template, series: str) -> re.Pattern[str]:
    """A regular expression that matches what ``template`` renders, one group per token: the
    first occurrence of a date token or a variable is captured, a repeat must read the same."""
    pieces: list[str] = []
    seen: set[str] = set()
    for part in template.parts:
        if isinstance(part, str):
            pieces.append(re.escape(part))
        elif isinstance(part, SeriesName):
            pieces.append(re.escape(series))
        elif isinstance(part, Seq):
            # str(value).zfill(pad): exactly pad digits, or more without a leading zero
            pad = part.pad or 1
            pieces.append(f"(?P<seq>[0-9]{{{pad}}}|[1-9][0-9]{{{pad},}})")
        else:
            group = f"d_{part.name}" if isinstance(part, DatePart) else f"v_{part.name}"
            if group in seen:
                pieces.append(f"(?P={group})")
                continue
            seen.add(group)
            if isinstance(part, DatePart):
                pieces.append(f"(?P<{group}>[0-9]{{{_DATE_WIDTHS[part.name]}}})")
            else:
                pieces.append(f"(?P<{group}>[A-Za-z0-9_-]{{1,32}})")
    return re.compile("".join(pieces))


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
    variables_in_key: bool = True,
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

    Last, it raises TemplateError when the template is ambiguous: when one
    string has two renderings that are different issues (find_collision() of
    the template with itself). With `variables_in_key` (a counter per
    combination of variable values), "{var:a}{var:b}-{seq}" is refused, since
    a="x", b="yz" and a="xy", b="z" count separately and both render "xyz-1";
    with one shared counter, values never repeat, so it is accepted. The
    specific checks above run first because their advice is more precise.

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
    collision = find_collision(template, template, series=series, variables_in_key=variables_in_key)
    if collision is not None:
        raise TemplateError(
            f"the template is ambiguous, so numbers could repeat: {collision.reason}; "
            f"separate its tokens with literal text that variables cannot contain (such as '/')"
        )


def two_digit_year_window(
    template: Template, reset: str
) -> tuple[datetime.date, datetime.date] | None:
    """The document dates a template with {YY} as its only year can number, or None.

    When {YY} is the only year-bearing token (no {YYYY}, no {FY}) and the counter
    resets, the period is told apart by the two-digit year, which repeats every
    hundred years: 1926 and 2026 would render the same numbers for two periods.
    Within 2000-01-01 .. 2099-12-31 the two digits name the year, so check_template()'s
    period guarantee holds there. None means no restriction: the template carries
    a full year, or no year at all, or the counter never resets.
    """
    used = template.uses()
    if reset == "never" or "YY" not in used or used & {"YYYY", "FY"}:
        return None
    return _TWO_DIGIT_CENTURY


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


# Collisions: one string, two issues


@dataclasses.dataclass(frozen=True, slots=True)
class Collision:
    """A string two templates could both render for two different issues.

    `number` is a shortest such string; `reason` is user-facing and quotes only
    the two templates and that string.
    """

    number: str
    reason: str


_VARIABLE_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-")
# Candidates for the one character standing for every variable character no literal
# uses, most readable first.
_STAND_INS = "xyzXYZ" + string.ascii_letters + "_-"
_SEQ_KEY = ("seq", "", False)


@dataclasses.dataclass(frozen=True, slots=True)
class _Step:
    """A transition: any character in the bit set `chars` leads to state `target`.

    `part` indexes Template.parts, the part that renders the character, and
    `starts` tells whether it is that part's first character. `key` is what the
    character means for the issue's identity: _SEQ_KEY for the counter, the
    kind, name and whether it starts for a date token (and for a variable when
    variables are in the counter key), None for everything else.
    """

    chars: int
    target: int
    part: int
    starts: bool
    key: tuple[str, str, bool] | None


class _Alphabet:
    """Every character that matters to two templates, one bit each.

    Digits and literal characters (of either template or of the series name)
    stand for themselves. Every other variable character is read by variable
    steps only, so one stand-in (such as "x") represents them all; it only makes
    examples readable, since a digit, which variable steps read too, would do.
    Any other character is read by no step at all.
    """

    def __init__(self, templates: Sequence[Template], series: str) -> None:
        literal = set(series)
        for template in templates:
            for part in template.parts:
                if isinstance(part, str):
                    literal.update(part)
        stand_in = next((c for c in _STAND_INS if c not in literal), "")
        ordered: list[str] = [stand_in, *"1234567890", *sorted(literal - _DIGITS)]
        self.chars: list[str] = [c for c in ordered if c]
        self.bits = {c: 1 << i for i, c in enumerate(self.chars)}
        self.digits = self.of(_DIGITS)
        self.nonzero = self.digits & ~self.bits["0"]
        self.variable = self.of(_VARIABLE_CHARACTERS)

    def of(self, chars: typing.Iterable[str]) -> int:
        return sum(self.bits.get(c, 0) for c in set(chars))

    def first(self, chars: int) -> str:
        """The most readable character of a non-empty bit set."""
        return self.chars[(chars & -chars).bit_length() - 1]


class _Automaton:
    """A template as a non-deterministic automaton over an _Alphabet.

    Each path from state 0 to an accepting state is one way of rendering its
    string: which part renders which character. It accepts a superset of what
    the template renders: literal text, the series name and {seq} exactly
    (value bounds aside: "0" or a non-zero digit and more digits; {seq:0N}
    exactly N digits, or more with a non-zero first one), a date token any
    digits of its width, a variable any non-empty run of variable characters.
    """

    def __init__(
        self, template: Template, alphabet: _Alphabet, *, series: str, variables_in_key: bool
    ) -> None:
        self.steps: list[list[_Step]] = [[]]
        frontier = [0]
        for index, part in enumerate(template.parts):
            if isinstance(part, str | SeriesName):
                text = series if isinstance(part, SeriesName) else part
                for at, char in enumerate(text):
                    frontier = [self._read(frontier, alphabet.bits[char], index, at == 0, None)]
            elif isinstance(part, DatePart):
                for at in range(_DATE_WIDTHS[part.name]):
                    key = ("date", part.name, at == 0)
                    frontier = [self._read(frontier, alphabet.digits, index, at == 0, key)]
            elif isinstance(part, Variable):
                first = ("var", part.name, True) if variables_in_key else None
                rest = ("var", part.name, False) if variables_in_key else None
                state = self._read(frontier, alphabet.variable, index, True, first)
                self._loop(state, alphabet.variable, index, rest)
                frontier = [state]
            else:
                # {seq} reads like {seq:01}. The longer branch comes first, so that
                # examples read "F-11" rather than "F-10".
                width = part.pad or 1
                longer = self._digits(frontier, alphabet.nonzero, alphabet, index, width)
                self._loop(longer, alphabet.digits, index, _SEQ_KEY)
                zeros = self._digits(frontier, alphabet.bits["0"], alphabet, index, width)
                frontier = [longer, zeros]
        self.accepting = frozenset(frontier)

    def _read(
        self,
        sources: list[int],
        chars: int,
        part: int,
        starts: bool,
        key: tuple[str, str, bool] | None,
    ) -> int:
        target = len(self.steps)
        self.steps.append([])
        for source in sources:
            self.steps[source].append(_Step(chars, target, part, starts, key))
        return target

    def _loop(self, state: int, chars: int, part: int, key: tuple[str, str, bool] | None) -> None:
        self.steps[state].append(_Step(chars, state, part, False, key))

    def _digits(
        self, sources: list[int], first: int, alphabet: _Alphabet, part: int, width: int
    ) -> int:
        """`width` digits for the counter, the first of them from `first`."""
        state = self._read(sources, first, part, True, _SEQ_KEY)
        for _ in range(width - 1):
            state = self._read([state], alphabet.digits, part, False, _SEQ_KEY)
        return state


# A state of the search: a state of each automaton, and whether every character so far
# meant the same for the identity on both paths.
_Pair: typing.TypeAlias = tuple[int, int, bool]


def find_collision(
    a: Template, b: Template, *, series: str, variables_in_key: bool
) -> Collision | None:
    """A string that `a` and `b` could both render for two different issues, or None.

    Two renderings of one string are the same issue when their {seq} tokens
    cover the same characters (so the same value), each date token of one
    covers the same characters as a date token of the same name in the other
    (so the same period), and, when `variables_in_key`, likewise for each
    {var:NAME} (so the same counter). Anything else is a collision; with
    a is b, that is the template's own ambiguity.

    The search runs breadth first over pairs of states of the two automata
    (_Automaton), carrying whether the two paths have so far agreed on what
    every character means (_Step.key), and stops at the first pair where both
    accept and they disagreed somewhere; the parents of that pair spell out a
    shortest colliding string and the two renderings.

    Why None can be trusted: every rendering is a path of its automaton (which
    accepts a superset of what the template renders), and two renderings are
    the same issue exactly when their steps carry equal keys at every
    character, because the keys spell out each token's span: a start key
    followed by its continuation keys, and one {seq} per template. The search
    visits every reachable pair of states with both verdicts, so if some string
    has two renderings that are different issues, its end pair is reached. The
    alphabet loses nothing: a character outside it is read by no step, and one
    read only by variable steps can be replaced by the stand-in without changing
    either path. The answer may be a string that never happens (a month "13", a
    variable 40 characters long): the check refuses when unsure.

    Each automaton has about one state per character of the template (and of
    the series name), so the search visits at most twice the product of those
    counts. Measured with timeit on a shared 2-core machine: 0.1-0.3 ms for
    realistic templates, 15-25 ms for contrived ones near the 200-character
    limit ("{var:a}" and 150 "-" against "{var:b}" and 150 "-", shared counter).
    """
    alphabet = _Alphabet((a, b), series)
    left = _Automaton(a, alphabet, series=series, variables_in_key=variables_in_key)
    right = _Automaton(b, alphabet, series=series, variables_in_key=variables_in_key)
    start: _Pair = (0, 0, True)
    parents: dict[_Pair, tuple[_Pair, str, _Step, _Step]] = {}
    queue = collections.deque([start])
    while queue:
        pair = queue.popleft()
        here, there, same = pair
        for step in left.steps[here]:
            for other in right.steps[there]:
                common = step.chars & other.chars
                following = (step.target, other.target, same and step.key == other.key)
                if not common or following in parents:
                    continue
                parents[following] = (pair, alphabet.first(common), step, other)
                accepted = step.target in left.accepting and other.target in right.accepting
                if accepted and not following[2]:
                    return _collision(a, b, following, parents, variables_in_key)
                queue.append(following)
    return None


def _collision(
    a: Template,
    b: Template,
    end: _Pair,
    parents: Mapping[_Pair, tuple[_Pair, str, _Step, _Step]],
    variables_in_key: bool,
) -> Collision:
    """The example string of `end` and a reason that describes both of its renderings."""
    chars: list[str] = []
    left: list[_Step] = []
    right: list[_Step] = []
    pair = end
    while pair in parents:
        pair, char, step, other = parents[pair]
        chars.append(char)
        left.append(step)
        right.append(other)
    number = "".join(reversed(chars))
    first = _reading(a, number, left[::-1], variables_in_key)
    second = _reading(b, number, right[::-1], variables_in_key)
    if a == b:
        reason = f"'{number}' could be rendered by '{a}' both as ({first}) and as ({second})"
    else:
        reason = f"'{number}' could be rendered by '{a}' ({first}) and by '{b}' ({second})"
    return Collision(number=number, reason=reason)


def _reading(
    template: Template, number: str, steps: Sequence[_Step], variables_in_key: bool
) -> str:
    """What one rendering of `number` stands for: its value, and the dates and variables keyed."""
    spans: list[tuple[int, str]] = []
    for char, step in zip(number, steps, strict=True):
        if step.starts:
            spans.append((step.part, char))
        else:
            spans[-1] = (step.part, spans[-1][1] + char)
    value = ""
    others: list[str] = []
    for part, text in spans:
        token = template.parts[part]
        if isinstance(token, Seq):
            value = f"value {int(text)}"
        elif isinstance(token, DatePart) or (isinstance(token, Variable) and variables_in_key):
            others.append(f"{token}={text}")
    return ", ".join([value, *others])


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
