"""Invoices numbered by Docnum: gapless and unique across every system that shares the series.

``Invoice.save()`` reserves its number, and the number follows the fate of the database
transaction that saves the invoice (``invoices.settle``): confirmed once it commits, released if
it rolls back, so a failed save leaves no hole in a gapless series; Docnum hands the number out
again. If the process dies in between, the reservation expires and Docnum does the same.

``bulk_create_numbered`` issues a whole list with one batch call instead, with an
Idempotency-Key derived from the invoices' ``uid``: retried after a failure, it gets the same
numbers back.
"""

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from invoices.docnum import client
from invoices.settle import confirm_or_release


class InvoiceQuerySet(models.QuerySet["Invoice"]):
    def bulk_create_numbered(self, invoices: Sequence["Invoice"]) -> list["Invoice"]:
        """Number every invoice that has no number with one batch call, then insert them all.

        A batch has one date, so the invoices to number must share ``issued_on``.
        """
        todo = [invoice for invoice in invoices if not invoice.number]
        if todo:
            dates = {invoice.issued_on for invoice in todo}
            if len(dates) != 1:
                raise ValueError(f"one date per batch, not {sorted(dates)}")
            batch = client().batch(
                settings.DOCNUM_INVOICE_SERIES,
                len(todo),
                date=dates.pop(),
                idempotency_key=_batch_key(todo),
            )
            for invoice, number in zip(todo, batch.numbers, strict=True):
                invoice.number = number
        with transaction.atomic(using=self.db):
            return self.bulk_create(invoices)


def _batch_key(invoices: Sequence["Invoice"]) -> str:
    """The same invoices, in the same order, always make the same key."""
    uids = ",".join(str(invoice.uid) for invoice in invoices)
    return "invoices-" + hashlib.sha256(uids.encode()).hexdigest()


class Invoice(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    number = models.CharField(max_length=64, unique=True, blank=True, editable=False)
    customer = models.CharField(max_length=200)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    issued_on = models.DateField(default=timezone.localdate)

    objects = InvoiceQuerySet.as_manager()

    def __str__(self) -> str:
        return self.number or f"draft {self.uid}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Reserve a number the first time the invoice is saved without one; it is confirmed
        when the transaction that saves the invoice commits, and released if it rolls back
        (this save failing included)."""
        if self.number:
            super().save(*args, **kwargs)
            return
        series = settings.DOCNUM_INVOICE_SERIES
        held = client().reserve(series, date=self.issued_on, document_ref=f"invoice-{self.uid}")
        self.number = held.number
        try:
            with transaction.atomic(using=kwargs.get("using")):
                confirm_or_release(series, held.id, using=kwargs.get("using"))
                super().save(*args, **kwargs)
        except BaseException:
            self.number = ""
            raise
