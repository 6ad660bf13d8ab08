"""One opaque cursor format for every list of the API (series, ledger, audit trail, keys).

A cursor is the position of the last item of a page, as base64url (without padding) of a JSON
array whose first item names the list it belongs to: ``["audit", 42]``. Clients pass it back as
``cursor`` and never read it. A cursor is client input like any other: one that does not decode,
belongs to another list, or has a position of the wrong shape is a 422 naming ``query.cursor``,
never a 500. Each list checks the values of its position (``decode``'s ``valid``).
"""

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence

from app.problems import field_error

# What a cursor query parameter may look like (base64url); long enough for any ledger position.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]*$"
CURSOR_MAX_LENGTH = 2000

Position = tuple[str | int, ...]


def matches(pattern: str, value: str | int) -> bool:
    """Whether a position's value is text of the given pattern (for ``decode``'s ``valid``)."""
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def encode(kind: str, position: Position) -> str:
    raw = json.dumps([kind, *position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(
    kind: str, cursor: str | None, shape: Sequence[type], valid: Callable[[Position], bool]
) -> Position | None:
    """The position a cursor of list ``kind`` holds, or None for the first page.

    ``shape`` gives the type of each value (exactly: a bool is no int); ``valid`` checks them.
    """
    if not cursor:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        decoded = None
    if (
        isinstance(decoded, list)
        and len(decoded) == len(shape) + 1
        and decoded[0] == kind
        and all(type(v) is t for v, t in zip(decoded[1:], shape, strict=True))
        and valid(tuple(decoded[1:]))
    ):
        return tuple(decoded[1:])
    raise field_error("query.cursor", "not a cursor this service returned for this list")
