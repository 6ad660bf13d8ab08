"""The one way requests are served on a connection: claim → take → render → hold → record → store.

Gapless mode runs it for a group of requests in one transaction (group commit); sequence and
cached mode for one request, in a transaction when it carries an Idempotency-Key or reserves its
numbers. What the modes differ in is how values are taken (``Take``); everything else is here,
once:

- **claim**: each request's Idempotency-Key is claimed first. A request whose key another
  request claimed first takes no value and gets that request's stored answer instead.
- **take**: the mode takes the values of every request that won its claim (or had none), in
  one go, in arrival order; gapless also gets its counter's chain head under the counter's lock.
- **render**: each request's run of values becomes its numbers. A number that cannot be rendered
  fails that request alone (:class:`RequestFailed`): the caller decides what the others do.
- **hold**: requests that reserve their numbers get their reservation rows (app.reservations).
- **record**: the numbers go into the ledger when the series keeps one, with their chain events
  when the mode passed a head, in one statement for all the requests.
- **store**: the answer each idempotent request gets is built once, stored for its replays and
  kept on its ``Issued`` (``body``), which the answer sends: a replay is the same bytes.

Everything runs on the caller's connection, in the caller's transaction if any: a claim, its
numbers, their ledger rows and the stored answer commit, or vanish, together.
"""

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app import chain, idempotency, reservations
from app.database import Connection
from app.issuing.issued import Issued, Outcome, Replayed, Request
from app.ledger import record_numbers
from app.problems import Problem


@dataclass(frozen=True, slots=True)
class Taken:
    """The values taken for a run of requests, in order, and the chain head to append to."""

    values: list[int]
    head: chain.Head | None = None


# Takes ``total`` values for ``requests`` (all of one series and counter) on the connection.
Take = Callable[[Connection, list[Request], int], Awaitable[Taken]]


class RequestFailed(Exception):
    """One request of the run cannot be served (its number cannot be rendered or breaks the
    series' rules, or its date is out of order): ``problem`` is its answer."""

    def __init__(self, request: Request, problem: Problem) -> None:
        self.request = request
        self.problem = problem


async def serve(
    conn: Connection, requests: list[Request], take: Take, ttl_seconds: int
) -> list[Outcome]:
    """Serve ``requests`` (one series and counter, in arrival order, one per Idempotency-Key);
    their outcomes in the same order."""
    series, counter = requests[0].series, requests[0].counter
    claims = [r.claim for r in requests if r.claim is not None]
    won = await idempotency.claim(conn, series, claims, ttl_seconds) if claims else set()
    fresh = [r for r in requests if r.claim is None or r.claim.key in won]
    issued: dict[int, Issued] = {}
    total = sum(r.count for r in fresh)
    if total:
        taken = await take(conn, fresh, total)
        start = 0
        for request in fresh:
            run = taken.values[start : start + request.count]
            start += request.count
            try:
                issued[id(request)] = request.render(run)
            except Problem as problem:
                raise RequestFailed(request, problem) from None
        held = [(r, r.hold) for r in fresh if r.hold is not None]
        if held:
            terms = [(hold, issued[id(r)]) for r, hold in held]
            reserved = await reservations.hold(conn, series, counter, terms)
            for (request, _), item in zip(held, reserved, strict=True):
                issued[id(request)] = item
        if series.ledger:
            await record_numbers(conn, series, counter, list(issued.values()), taken.head)
        answers = []
        for request in fresh:
            if request.claim is not None:
                body = request.respond(issued[id(request)])
                issued[id(request)] = dataclasses.replace(issued[id(request)], body=body)
                answers.append((request.claim, body))
        if answers:
            await idempotency.store(conn, series, answers)
    lost = [r.claim for r in requests if id(r) not in issued and r.claim is not None]
    replays = await idempotency.replays(conn, series, lost) if lost else {}
    return [issued[id(r)] if id(r) in issued else _replay(r, replays) for r in requests]


def _replay(request: Request, replays: dict[str, Replayed]) -> Replayed:
    assert request.claim is not None, "only a request with a claim can lose it"
    return replays[request.claim.key]
