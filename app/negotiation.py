"""Content negotiation: which of the media types a route can send the ``Accept`` header prefers.

Each offer gets the weight (``q``) of the most specific media range that matches it (``text/csv``
before ``text/*`` before ``*/*``), as RFC 9110 section 12.5.1 says. The offer with the highest
weight wins; between equal weights, the one a range names exactly wins, then the route's first
offer. An offer with ``q=0`` is never chosen, and when nothing is acceptable the first offer is sent
anyway (a route's default representation rather than a 406), so that ``Accept: text/html`` on a
JSON route still gets JSON. Parameters other than ``q`` are ignored.
"""

from collections.abc import Sequence


def _ranges(accept: str) -> list[tuple[str, str, float]]:
    """The header's media ranges as (type, subtype, q); malformed entries are skipped."""
    ranges = []
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        kind, slash, subtype = media.lower().partition("/")
        if not slash or not kind or not subtype:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges.append((kind, subtype, q))
    return ranges


def _weight(offer: str, ranges: list[tuple[str, str, float]]) -> tuple[float, int]:
    """The offer's q and how specific the range that gave it was (2 exact, 1 type/*, 0 */*)."""
    kind, _, subtype = offer.partition("/")
    best: tuple[int, float] | None = None
    for range_kind, range_subtype, q in ranges:
        if (range_kind, range_subtype) == (kind, subtype):
            specificity = 2
        elif range_kind == kind and range_subtype == "*":
            specificity = 1
        elif (range_kind, range_subtype) == ("*", "*"):
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, q)
    if best is None:
        return 0.0, -1
    return best[1], best[0]


def negotiate(accept: str | None, offers: Sequence[str]) -> str:
    """The offer ``accept`` prefers; the first offer when there is no header or no match."""
    if not accept:
        return offers[0]
    ranges = _ranges(accept)
    weights = {offer: _weight(offer, ranges) for offer in offers}
    acceptable = [(weights[o], -i, o) for i, o in enumerate(offers) if weights[o][0] > 0]
    return max(acceptable)[2] if acceptable else offers[0]
