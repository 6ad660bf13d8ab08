"""A tamper-evident hash chain per counter of every gapless series.

Every change of a gapless ledger is an **event** of its counter, appended to the counter's chain:
a ``kind`` (``issued``, ``voided``; ``recorded`` for rows that existed before the chain), the
ledger row it concerns (its ``value``; none for an event of the counter itself), its ``content``
and its ``hash``. docs/ledger-chain.md gives the algorithm for auditors.

- **Content** is canonical JSON (keys sorted, no whitespace, UTF-8, non-ASCII as is). An event
  that leaves a ledger row in some state is exactly ``{"kind":…,"row":{…}}``, the row's fields
  (``ROW_FIELDS``) as the row now holds them, timestamps in UTC as
  ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` and NULL fields left out; one that removed a row is
  ``{"kind":…,"row":null,"value":…}``; an event of the counter is ``kind`` and its facts. The
  content is stored as hashed, so a chain never depends on re-encoding anything.
- **hash = SHA-256(previous hash || UTF-8 content)**; the first event's previous hash is
  ``GENESIS``, 32 zero bytes. Events are numbered ``seq`` 1, 2, … in chain order.
- **The head** (``chain_seq``, ``chain_head``: how many events, and the last hash) lives on the
  counter row. Events are appended only under that row's lock: gapless issuing takes it in the
  statement that advances the counter (which returns the head, see ``app.issuing.counters``) and
  appends with the statement that records the numbers, so the chain costs no round trip there.
  One order per counter follows, and the head always names the last event.
- **Rows point at their last event.** A ledger row carries the ``seq`` and hash of the last event
  of its counter for its value (``numbers.chain_seq``, ``chain_hash``): the CSV export shows them.
- **Verification runs in the database**, in the caller's snapshot: each link is checked against
  the *stored* hash before it (SHA-256(stored previous hash || content) = stored hash, for every
  event, is the whole chain by induction), so the events need no ordering and nothing but the
  verdict leaves the database; and every ledger row is rendered as canonical JSON by
  ``ROW_TEXT`` and compared with its last event's content. ``row_text`` is the same rendering in
  Python; tests hold the two to the same bytes as ``encode``.

Sequence and cached series are not chained: their ledger rows are written by concurrent requests
that share no lock, which is what makes those modes fast. Ordering their events would take the
counter row's lock in every request that records a number (a transaction, a ``SELECT … FOR
UPDATE`` and a commit each, one request of a counter at a time), the cost of gapless issuing
without the group commit that makes it affordable. docs/ledger-chain.md says so to users.

Appending a new kind of event, from code that writes or changes a gapless series' ledger row (or
counter) in a transaction, is one call, made after the change, on the same connection::

    await chain.append(conn, series.id, counter, [chain.event("released", row=row)])

``row`` is the ledger row as it now stands (a mapping with at least the ``ROW_FIELDS``, such as
the record of an ``UPDATE … RETURNING *``). An event that removed the row gives its ``value``
instead (``chain.event("released", value=7)``); an event of the counter gives neither, and its
facts as keywords (``chain.event("counter-set", last_value=99)``). ``append`` locks the counter
row (a no-op when the transaction holds it already), links the events after the head, stores
them, moves the head and marks the rows. Code that must take the counter's lock before it changes
a row (lock order: counter, then ledger rows, as issuing takes them) calls :func:`lock` first. A
new column of ledger rows goes into ``ROW_FIELDS``, ``ROW_TEXT`` and ``row_text``, left out when
NULL, so that events hashed before it existed still match their rows.
"""

import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from app.database import Connection
from app.definition import CounterKey
from app.schemas import ChainBreak, CounterChain

GENESIS = bytes(32)
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

# A ledger row's fields as an event records them, in the (sorted) order of its canonical JSON.
ROW_FIELDS = (
    "date",
    "document_ref",
    "external",
    "issued_at",
    "number",
    "period",
    "status",
    "value",
    "variables",
    "void_reason",
    "voided_at",
)


def _sql_text(column: str) -> str:
    return f"to_json({column})::text"


def _sql_timestamp(column: str) -> str:
    return (
        f"""'"' || to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"'"""
    )


def _sql_optional(name: str, rendered: str, column: str) -> str:
    return f"""CASE WHEN {column} IS NULL THEN '' ELSE ',"{name}":' || {rendered} END"""


# The ledger row ``n`` as canonical JSON text, the bytes ``row_text`` makes of it: PostgreSQL's
# JSON string escapes are Python's with ``ensure_ascii`` off (``\\"``, ``\\\\``, ``\\b``,
# ``\\f``, ``\\n``, ``\\r``, ``\\t``, other control characters as ``\\u00xx``). ``date`` goes
# through ``timestamp`` (its text form would follow the session's DateStyle).
ROW_TEXT = " || ".join(
    [
        """'{"date":"' || to_char(n.date::timestamp, 'YYYY-MM-DD') || '"'""",
        _sql_optional("document_ref", _sql_text("n.document_ref"), "n.document_ref"),
        """',"external":' || n.external::text""",
        """',"issued_at":' || """ + _sql_timestamp("n.issued_at"),
        """',"number":' || """ + _sql_text("n.number"),
        """',"period":' || """ + _sql_text("n.period"),
        """',"status":' || """ + _sql_text("n.status"),
        """',"value":' || n.value::text""",
        """',"variables":' || """ + _sql_text("n.variables"),
        _sql_optional("void_reason", _sql_text("n.void_reason"), "n.void_reason"),
        _sql_optional("voided_at", _sql_timestamp("n.voided_at"), "n.voided_at"),
        "'}'",
    ]
)

# The counter's head, locked until the transaction ends.
LOCK_HEAD = """
SELECT id, chain_seq, chain_head FROM counters
WHERE series_id = $1 AND period = $2 AND variables = $3
FOR UPDATE
"""
# Stores events after event {seq} of counter {counter}, from the relation {source} with the
# columns position (1, 2, … in chain order), kind, value, content and hash. A CTE, so that the
# statement that records numbers can append their events too (app.ledger).
APPEND_EVENTS = """
appended AS (
    INSERT INTO ledger_events (counter_id, seq, kind, value, content, hash)
    SELECT {counter}, {seq} + position, kind, value, content, hash FROM {source}
)"""
# Moves the head of counter {counter} to ({new_seq}, {new_head}).
MOVE_HEAD = (
    "UPDATE counters SET chain_seq = {new_seq}, chain_head = {new_head} WHERE id = {counter}"
)
# Appends events ($5..$8) after the head ($1: counter id, $2: seq), marks each row ($9: series,
# $10: period, $11: variables) with its last event, and moves the head to ($3, $4).
APPEND = f"""
WITH {
    APPEND_EVENTS.format(
        counter="$1",
        seq="$2",
        source="unnest($5::bigint[], $6::text[], $7::text[], $8::bytea[])"
        " WITH ORDINALITY AS e (value, kind, content, hash, position)",
    )
},
marked AS (
    UPDATE numbers AS n SET chain_seq = m.seq, chain_hash = m.hash
    FROM (
        SELECT DISTINCT ON (value) value, $2 + position AS seq, hash
        FROM unnest($5::bigint[], $8::bytea[]) WITH ORDINALITY AS e (value, hash, position)
        WHERE value IS NOT NULL
        ORDER BY value, position DESC
    ) AS m
    WHERE n.series_id = $9 AND n.period = $10 AND n.variables = $11 AND n.value = m.value
)
{MOVE_HEAD.format(counter="$1", new_seq="$3", new_head="$4")}
"""

# Verification plans each statement for its own counter: a plan made once for any counter (what
# PostgreSQL settles on after a statement ran five times) may join a large chain to itself row by
# row. Its joins and grouping over a period's events fit in memory with 64 MB, rather than
# spilling to disk in batches. For the caller's transaction only.
VERIFY_SETTINGS = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL work_mem = '64MB'"
# Verification reads the counters of a period ($2; one counter when $3 is not NULL), …
SELECT_HEADS = """
SELECT id, variables, chain_seq, chain_head FROM counters
WHERE series_id = $1 AND period = $2 AND ($3::text IS NULL OR variables = $3)
ORDER BY variables
"""
# … checks every link of a counter's chain ($1) in one pass: the first event whose hash is not
# SHA-256(hash of the event before it, or GENESIS ($2) when there is none || content), which
# includes the event after one deleted; how many events there are, and the last one's seq. Each
# link is checked on its own, against the stored hash before it, so events need no ordering (a
# join, which PostgreSQL can run in parallel, rather than a window over a sort).
CHECK_LINKS = """
SELECT min(e.seq) FILTER (
           WHERE sha256(coalesce(p.hash, $2::bytea)
                        || convert_to(e.content, 'UTF8')) IS DISTINCT FROM e.hash
       ) AS broken,
       count(*) AS events, coalesce(max(e.seq), 0) AS last_seq
FROM ledger_events AS e
LEFT JOIN ledger_events AS p ON p.counter_id = $1 AND p.seq = e.seq - 1
WHERE e.counter_id = $1
"""
# … reads an event ($2) of the counter ($1) and the one before it in the chain, …
SELECT_LINK = """
SELECT seq, kind, value, content, hash FROM ledger_events
WHERE counter_id = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 2
"""
# … and finds the first ledger row ($1: series, $2: period, $3: variables) that differs from the
# last event of the counter ($4) for its value: missing, recorded by no event, marked with
# another event, or other than the content of its event.
CHECK_ROWS = f"""
WITH last AS (
    SELECT value, max(seq) AS seq FROM ledger_events
    WHERE counter_id = $4 AND value IS NOT NULL
    GROUP BY value
),
found AS (
    SELECT n.value, n.chain_seq, n.chain_hash, {ROW_TEXT} AS row_text
    FROM numbers AS n
    WHERE n.series_id = $1 AND n.period = $2 AND n.variables = $3
),
compared AS (
    SELECT coalesce(last.value, found.value) AS value, last.seq, e.kind, e.content, e.hash,
           found.value IS NOT NULL AS recorded, found.chain_seq, found.chain_hash, found.row_text,
           '{{"kind":' || to_json(e.kind)::text || CASE
               WHEN found.value IS NULL THEN ',"row":null,"value":' || last.value::text || '}}'
               ELSE ',"row":' || found.row_text || '}}'
           END AS expected_content
    FROM last FULL JOIN found ON found.value = last.value
    LEFT JOIN ledger_events AS e ON e.counter_id = $4 AND e.seq = last.seq
)
SELECT * FROM compared
WHERE seq IS NULL OR content IS DISTINCT FROM expected_content
    OR recorded AND (seq IS DISTINCT FROM chain_seq OR hash IS DISTINCT FROM chain_hash)
ORDER BY seq NULLS LAST, value
LIMIT 1
"""


class Head(NamedTuple):
    """A counter's chain as of its last event: ``seq`` events, the last one hashing to ``hash``."""

    counter_id: int
    seq: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    value: int | None  # the ledger row it concerns
    content: str


def encode(document: Mapping[str, Any]) -> str:
    """Canonical JSON: sorted keys, no whitespace, non-ASCII as is."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime(TIMESTAMP_FORMAT)


def row_text(row: Mapping[str, Any]) -> str:
    """A ledger row (its ``ROW_FIELDS``) as canonical JSON, NULL fields left out; the same text
    as ``encode`` makes of it, and as ``ROW_TEXT`` renders in the database, but faster."""
    text = json.dumps
    parts = ['{"date":"', row["date"].isoformat(), '"']
    if row["document_ref"] is not None:
        parts += [',"document_ref":', text(row["document_ref"], ensure_ascii=False)]
    parts += [
        ',"external":',
        "true" if row["external"] else "false",
        ',"issued_at":"',
        timestamp(row["issued_at"]),
        '","number":',
        text(row["number"], ensure_ascii=False),
        ',"period":',
        text(row["period"], ensure_ascii=False),
        ',"status":',
        text(row["status"], ensure_ascii=False),
        ',"value":',
        str(int(row["value"])),
        ',"variables":',
        text(row["variables"], ensure_ascii=False),
    ]
    if row["void_reason"] is not None:
        parts += [',"void_reason":', text(row["void_reason"], ensure_ascii=False)]
    if row["voided_at"] is not None:
        parts += [',"voided_at":"', timestamp(row["voided_at"]), '"']
    parts.append("}")
    return "".join(parts)


def event(
    kind: str,
    *,
    row: Mapping[str, Any] | None = None,
    value: int | None = None,
    **facts: object,
) -> Event:
    """An event of ``kind`` (see above): one that leaves the ledger row ``row`` as it now stands,
    one that removed the row of ``value``, or, with neither, one of the counter itself."""
    if row is not None:
        return Event(kind, row["value"], row_content(kind, row_text(row)))
    if value is not None:
        return Event(kind, value, encode({"kind": kind, "row": None, "value": value}))
    return Event(kind, None, encode({"kind": kind, **facts}))


def row_content(kind: str, text: str) -> str:
    """The content of an event that leaves a row as ``text`` (``row_text``) says."""
    return '{"kind":' + json.dumps(kind, ensure_ascii=False) + ',"row":' + text + "}"


# Stands for the number in a template of rows alike but for their value and number; a character
# of Unicode's private use area, and no other field of such rows can hold it (see ``events_of``).
NUMBER_SLOT = "\ue000"
VALUE_KEY = ',"value":'
_json_text = json.JSONEncoder(ensure_ascii=False).encode


def events_of(kind: str, row: Mapping[str, Any], numbers: Sequence[tuple[int, str]]) -> list[Event]:
    """``[event(kind, row={**row, "value": v, "number": n}) for v, n in numbers]``, with the row
    rendered once: the same contents, at a fraction of the cost for a batch.

    The template is ``row`` rendered with ``NUMBER_SLOT`` as its number and 0 as its value. Its
    number is the one JSON string holding ``NUMBER_SLOT`` when no other field holds that
    character (checked), and ``,"value":`` with its unescaped quotes can only be the key.
    """
    text = row_content(kind, row_text({**row, "number": NUMBER_SLOT, "value": 0}))
    head, slot, rest = text.partition(_json_text(NUMBER_SLOT))
    middle, key, tail = rest.partition(VALUE_KEY + "0")
    if NUMBER_SLOT in head + rest or not (slot and key):
        return [event(kind, row={**row, "value": v, "number": n}) for v, n in numbers]
    middle += VALUE_KEY
    return [
        Event(kind, value, head + _json_text(number) + middle + str(value) + tail)
        for value, number in numbers
    ]


# Separates the contents of events sent to the database as one text (``joined_contents``): a
# control character, which canonical JSON never holds unescaped, so no content can contain it.
CONTENT_SEPARATOR = "\x1e"


def joined_contents(events: Sequence[Event]) -> str:
    """The events' contents as one text, ``CONTENT_SEPARATOR`` between them: sent as one value,
    they cost the database one parameter to decode rather than one array element each."""
    return CONTENT_SEPARATOR.join(e.content for e in events)


def link(head: Head, events: Sequence[Event]) -> tuple[list[bytes], Head]:
    """The hashes of ``events`` appended after ``head``, and the head after them."""
    hashes: list[bytes] = []
    last = head.hash
    sha256 = hashlib.sha256
    for item in events:
        last = sha256(last + item.content.encode()).digest()
        hashes.append(last)
    return hashes, Head(head.counter_id, head.seq + len(events), last)


def head_of(row: Mapping[str, Any]) -> Head:
    """The head in a counter row read with ``id, chain_seq, chain_head``."""
    return Head(row["id"], row["chain_seq"], bytes(row["chain_head"]))


async def lock(conn: Connection, series_id: int, counter: CounterKey) -> Head | None:
    """Lock the counter row until the transaction ends; its head, or None if it has no row."""
    row = await conn.fetchrow(LOCK_HEAD, series_id, counter.period, counter.variables)
    return None if row is None else head_of(row)


async def append(
    conn: Connection, series_id: int, counter: CounterKey, events: Sequence[Event]
) -> Head:
    """Append ``events`` to the counter's chain, in the caller's transaction (see above)."""
    assert conn.is_in_transaction(), "events belong to the change's own transaction"
    head = await lock(conn, series_id, counter)
    assert head is not None, "a ledger row's counter exists"
    hashes, new = link(head, events)
    await conn.execute(
        APPEND,
        head.counter_id,
        head.seq,
        new.seq,
        new.hash,
        [e.value for e in events],
        [e.kind for e in events],
        [e.content for e in events],
        hashes,
        series_id,
        counter.period,
        counter.variables,
    )
    return new


async def verify(
    conn: Connection, series_id: int, period: str, variables: str | None
) -> list[CounterChain]:
    """Check the chain of each counter of ``period`` (or of one counter) and its ledger rows.

    Run it in one snapshot (a repeatable-read transaction, which it sets to plan each statement
    for its counter), so that issuing meanwhile cannot look like a break. Each counter's report
    names its first broken link, in chain order: a missing event, an event whose hash is not
    SHA-256(previous hash || content), a head that is not the last event, or a ledger row other
    than its last event left it (altered, deleted, or recorded by no event).
    """
    await conn.execute(VERIFY_SETTINGS)
    return [
        await _verify_counter(conn, series_id, period, counter)
        for counter in await conn.fetch(SELECT_HEADS, series_id, period, variables)
    ]


async def _verify_counter(
    conn: Connection, series_id: int, period: str, counter: Mapping[str, Any]
) -> CounterChain:
    head = head_of(counter)
    links = await conn.fetchrow(CHECK_LINKS, head.counter_id, GENESIS)
    assert links is not None, "an aggregate without GROUP BY gives one row"
    broken: ChainBreak | None = None
    if links["broken"] is not None:
        broken = await _broken_link(conn, head.counter_id, links["broken"])
    else:
        last = await conn.fetch(SELECT_LINK, head.counter_id, links["last_seq"])
        last_hash = bytes(last[0]["hash"]) if last else GENESIS
        if (links["events"], last_hash) != (head.seq, head.hash):
            broken = ChainBreak(
                problem="head-moved",
                seq=min(links["events"], head.seq) + 1,
                value=None,
                expected=f"{links['events']}:{last_hash.hex()}",
                found=f"{head.seq}:{head.hash.hex()}",
                detail=f"The counter's head says {head.seq} events; the chain holds "
                f"{links['events']}: events were added or removed at its end.",
            )
        else:
            row = await conn.fetchrow(
                CHECK_ROWS, series_id, period, counter["variables"], head.counter_id
            )
            broken = None if row is None else _broken_row(row)
    return CounterChain(
        variables=counter["variables"],
        events=head.seq,
        head=head.hash.hex(),
        intact=broken is None,
        broken=broken,
    )


async def _broken_link(conn: Connection, counter_id: int, seq: int) -> ChainBreak:
    found, *before = await conn.fetch(SELECT_LINK, counter_id, seq)
    expected_seq = before[0]["seq"] + 1 if before else 1
    if seq != expected_seq:
        return ChainBreak(
            problem="event-missing",
            seq=expected_seq,
            value=None,
            expected=str(expected_seq),
            found=str(seq),
            detail=f"Event {expected_seq} is missing: the chain goes on with event {seq}.",
        )
    previous_hash = bytes(before[0]["hash"]) if before else GENESIS
    computed = hashlib.sha256(previous_hash + found["content"].encode()).digest()
    return ChainBreak(
        problem="event-altered",
        seq=seq,
        value=found["value"],
        expected=computed.hex(),
        found=bytes(found["hash"]).hex(),
        detail=f"Event {seq} ({found['kind']}) does not hash to its stored hash: its content "
        "or hash was changed, or the hash of the event before it was.",
    )


def _row_part(content: str | None) -> str | None:
    """The ``row`` of a row event's content, as stored (None: no such event, or no row)."""
    if content is None:
        return None
    row = json.loads(content).get("row")
    return None if row is None else encode(row)


def _broken_row(row: Mapping[str, Any]) -> ChainBreak:
    value, seq = row["value"], row["seq"]
    if seq is None:
        return ChainBreak(
            problem="row-unrecorded",
            seq=None,
            value=value,
            expected=None,
            found=row["row_text"],
            detail=f"The ledger holds value {value}, which no event recorded.",
        )
    if row["row_text"] is None:
        return ChainBreak(
            problem="row-missing",
            seq=seq,
            value=value,
            expected=_row_part(row["content"]),
            found=None,
            detail=f"Event {seq} left a row for value {value}; the ledger has none.",
        )
    if (row["chain_seq"], row["chain_hash"]) != (seq, row["hash"]):
        mark = row["chain_hash"].hex() if row["chain_hash"] is not None else None
        return ChainBreak(
            problem="row-altered",
            seq=seq,
            value=value,
            expected=f"{seq}:{bytes(row['hash']).hex()}",
            found=f"{row['chain_seq']}:{mark}",
            detail=f"The row of value {value} names event {row['chain_seq']}; its last event "
            f"is {seq}.",
        )
    return ChainBreak(
        problem="row-altered",
        seq=seq,
        value=value,
        expected=_row_part(row["content"]),
        found=row["row_text"],
        detail=f"The row of value {value} differs from what event {seq} recorded.",
    )
