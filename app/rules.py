"""Number rules: how long a series' numbers may be and which characters they may hold.

Tax authorities bound invoice numbers, and a number that breaks their rule is refused at their
portal long after it was issued. A series states its rule with ``max_length``, with
``allowed_characters``, or with a named profile (``PROFILES``, each with its source); when it
states several, every one of them applies.

Invariants, and why they hold:

- **A series' current format can satisfy its rules.** When a series is created or changed,
  ``NumberRules.check_template`` refuses a format whose numbers would break a rule whatever the
  variables: its longest rendering without variables (the counter at its highest value, every
  date token at its width, each variable at one character) must fit the length, every character
  of its literal text (and of the series name and date labels it shows) must be allowed, and a
  profile's pattern must match a rendering of it.
- **No number that breaks a rule is issued.** Variables (and formats kept for earlier dates) can
  still make a number too long, or bring a character the rules refuse. Every number is checked
  when it is rendered, before its request takes effect (``NumberRules.violation``), and a request
  whose number fails is refused with nothing issued. The numbers of one request differ only in
  their counter digits, which the template check allows, so checking the first and the last
  (the longest) covers all of them.
"""

import datetime
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.formatting import (
    DATE_SHAPES,
    LARGEST_COUNTER_VALUE,
    MAX_NUMBER_LENGTH,
    DatePart,
    Seq,
    SeriesName,
    Template,
)

# "A-Z" and other ranges, or single characters; "-" first or last stands for itself.
_RANGE = re.compile(r"(.)-(.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Profile:
    """One country's rules for its invoice numbers, and where they are written."""

    max_length: int
    characters: str  # in the notation of allowed_characters
    pattern: str | None  # a regular expression every number must match in full
    source: str


PROFILES: dict[str, Profile] = {
    "in-gst": Profile(
        max_length=16,
        characters="A-Za-z0-9/-",
        pattern=None,
        source="India: CGST Rules 2017, rule 46(b): a consecutive serial number not exceeding "
        "sixteen characters, of letters, digits, hyphen or dash (-) and slash (/), unique for "
        "a financial year.",
    ),
    "it-sdi": Profile(
        max_length=20,
        characters=" -~",
        pattern=None,
        source="Italy: FatturaPA schema (Sistema di Interscambio), "
        "DatiGeneraliDocumento/Numero, type String20Type: 1 to 20 Basic Latin characters.",
    ),
    "fr-einvoice": Profile(
        max_length=35,
        characters="A-Za-z0-9+_/-",
        pattern=None,
        source="France: external specifications of the e-invoicing reform, invoice number "
        "(BT-1, TT-19): at most 35 characters, letters, digits and - + _ /; numbering per "
        "BOI-TVA-DECLA-30-20-20-10.",
    ),
    "es-aeat": Profile(
        max_length=60,
        characters=" -~",
        pattern=None,
        source="Spain: AEAT record designs of VERI*FACTU (Orden HAC/1177/2024) and SII, "
        "NumSerieFactura: at most 60 printable ASCII characters.",
    ),
    "pt-saft": Profile(
        max_length=60,
        characters="A-Za-z0-9./_ -",
        pattern=r"[a-zA-Z0-9./_-]+ [a-zA-Z0-9]*/[0-9]+",
        source="Portugal: SAF-T (PT) 1.04_01 schema (Portaria 302/2016), InvoiceNo: at most 60 "
        "characters, the document type, a space, the series, '/' and the sequential number.",
    ),
}
PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)

# Renders a number for the pattern check of a template: any date shows every token's shape.
_SAMPLE_DATE = datetime.date(2026, 1, 1)
# What a variable is taken to be when a template is checked: one character every rule allows.
_SAMPLE_VARIABLE = "A"


def parse_character_set(notation: str) -> re.Pattern[str]:
    """The pattern matching any string of the characters ``notation`` names.

    Raises ValueError (a user-facing message) for a range whose ends are out of order.
    """
    ranges: list[str] = []
    at = 0
    while at < len(notation):
        found = _RANGE.match(notation, at)
        if found is not None:
            low, high = found[1], found[2]
            if low > high:
                raise ValueError(f"the range {low}-{high} runs backwards")
            ranges.append(f"{re.escape(low)}-{re.escape(high)}")
            at += 3
        else:
            ranges.append(re.escape(notation[at]))
            at += 1
    return re.compile(f"[{''.join(ranges)}]*")


@dataclass(frozen=True, slots=True)
class NumberRules:
    """Everything a series' numbers must satisfy beyond the service's own limit."""

    max_length: int
    # Each allowed character set, named by where it comes from.
    characters: tuple[tuple[str, re.Pattern[str]], ...]
    patterns: tuple[tuple[str, re.Pattern[str]], ...]

    def violation(self, number: str) -> str | None:
        """Why ``number`` breaks the rules (a user-facing message), or None."""
        if len(number) > self.max_length:
            return (
                f"the number would be {len(number)} characters long; "
                f"the series' rules allow {self.max_length}"
            )
        for origin, allowed in self.characters:
            if allowed.fullmatch(number) is None:
                bad = next(c for c in number if allowed.fullmatch(c) is None)
                return f"the number would hold {bad!r}, which {origin} does not allow"
        for origin, pattern in self.patterns:
            if pattern.fullmatch(number) is None:
                return f"the number would not match {origin}'s pattern {pattern.pattern!r}"
        return None

    def check_numbers(self, numbers: Sequence[str]) -> str | None:
        """The first violation among the numbers of one request (see the module docstring)."""
        if not numbers:
            return None
        return self.violation(numbers[0]) or self.violation(numbers[-1])

    def check_template(
        self, template: Template, *, series: str, max_value: int | None, fiscal_year_start: int
    ) -> str | None:
        """Why every number of ``template`` would break the rules, or None (see the module
        docstring); a user-facing message."""
        counter_digits = len(str(LARGEST_COUNTER_VALUE if max_value is None else max_value))
        fixed: list[str] = []
        length = 0
        for part in template.parts:
            if isinstance(part, str):
                fixed.append(part)
                length += len(part)
            elif isinstance(part, Seq):
                length += max(part.pad or 0, counter_digits)
                fixed.append("0123456789")
            elif isinstance(part, DatePart):
                fixed.append(DATE_SHAPES[part.name].replace("0", "0123456789"))
                length += len(DATE_SHAPES[part.name])
            elif isinstance(part, SeriesName):
                fixed.append(series)
                length += len(series)
            else:
                length += 1
        if length > self.max_length:
            bound = "" if max_value is not None else " (set max_value to bound the counter)"
            return (
                f"numbers from this format can be {length} characters long even with one-"
                f"character variables; the series' rules allow {self.max_length}{bound}"
            )
        shown = "".join(fixed)
        for origin, allowed in self.characters:
            bad = sorted({c for c in shown if allowed.fullmatch(c) is None})
            if bad:
                return f"the format renders {''.join(bad)!r}, which {origin} does not allow"
        if self.patterns:
            sample = template.render(
                max_value or 1,
                date=_SAMPLE_DATE,
                series=series,
                variables=dict.fromkeys(template.variables, _SAMPLE_VARIABLE),
                fiscal_year_start=fiscal_year_start,
            )
            for origin, pattern in self.patterns:
                if pattern.fullmatch(sample) is None:
                    return (
                        f"numbers such as {sample!r} do not match {origin}'s pattern "
                        f"{pattern.pattern!r}"
                    )
        return None


# Rules parsed once and kept: the distinct combinations in use, bounded since administrators
# choose the character sets.
RULES_KEPT = 1024


@functools.lru_cache(maxsize=RULES_KEPT)
def number_rules(
    profile: str | None, max_length: int | None, allowed_characters: str | None
) -> NumberRules:
    """The rules of a series with these fields; kept (the last RULES_KEPT combinations used), so
    a request pays for no parsing."""
    limits = [MAX_NUMBER_LENGTH]
    characters: list[tuple[str, re.Pattern[str]]] = []
    patterns: list[tuple[str, re.Pattern[str]]] = []
    if profile is not None:
        named = PROFILES[profile]
        limits.append(named.max_length)
        characters.append((f"the profile {profile}", parse_character_set(named.characters)))
        if named.pattern is not None:
            patterns.append((f"the profile {profile}", re.compile(named.pattern)))
    if max_length is not None:
        limits.append(max_length)
    if allowed_characters is not None:
        characters.append(
            (f"allowed_characters {allowed_characters!r}", parse_character_set(allowed_characters))
        )
    return NumberRules(min(limits), tuple(characters), tuple(patterns))
