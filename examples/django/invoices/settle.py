"""A reservation that follows the fate of the database transaction it was made for.

Django runs ``transaction.on_commit`` callbacks once the outermost transaction commits, and drops
them, unrun, when the transaction (or the savepoint they were registered in) rolls back; it has
no hook for a rollback. So the callback registered here is an object that confirms the
reservation when it is run, and a finalizer releases the reservation when Django drops the object
without running it. CPython frees the object as soon as Django drops it; at the latest, the
finalizer runs when the interpreter exits. Should the process die first, the reservation expires
in Docnum, which then does what a release does.

A confirm that fails after the commit (Docnum unreachable past the client's retries) is logged
by Django (``robust``) and leaves a saved invoice whose number is still only reserved: confirm it
before its ``expires_at`` (the log names the reservation), or the number is let go.
"""

import logging
import weakref

from django.db import transaction
from docnum_client import DocnumError

from invoices.docnum import client

logger = logging.getLogger("invoices")


class _Confirm:
    """The on_commit callback: confirms the reservation, and says so to the finalizer."""

    def __init__(self, series: str, reservation_id: str, outcome: dict[str, bool]) -> None:
        self.series = series
        self.reservation_id = reservation_id
        self.outcome = outcome

    def __call__(self) -> None:
        self.outcome["run"] = True
        client().confirm(self.series, self.reservation_id)


def _release_unless_run(series: str, reservation_id: str, outcome: dict[str, bool]) -> None:
    if outcome["run"]:
        return
    try:
        client().release(series, reservation_id)
    except DocnumError as error:  # it expires in Docnum all the same
        logger.warning("could not release reservation %s: %s", reservation_id, error)


def confirm_or_release(series: str, reservation_id: str, using: str | None = None) -> None:
    """Confirm the reservation when the current transaction commits (at once, outside one);
    release it if the transaction rolls back."""
    outcome = {"run": False}
    confirm = _Confirm(series, reservation_id, outcome)
    weakref.finalize(confirm, _release_unless_run, series, reservation_id, outcome)
    transaction.on_commit(confirm, using=using, robust=True)
