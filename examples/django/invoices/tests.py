"""The example against a live Docnum.

    DOCNUM_URL=http://127.0.0.1:8000 DOCNUM_API_KEY=dn_... DOCNUM_INVOICE_SERIES=invoice \\
        python manage.py test

The series must exist, be gapless, and end its format with the sequence (``INV-{YYYY}-{seq:06}``).
``InvoiceNumberTests`` run inside Django's test transaction, which rolls back after each test:
their reserved numbers are released then.
"""

import datetime
import re
import uuid
from decimal import Decimal
from unittest import mock

from django.conf import settings
from django.db import IntegrityError, transaction
from django.test import TestCase, TransactionTestCase

from invoices.docnum import client
from invoices.models import Invoice


def sequence(number: str) -> int:
    found = re.search(r"(\d+)$", number)
    assert found, number
    return int(found.group(1))


class Crash(Exception):
    """Stands for anything that stops a save after the number was issued."""


class InvoiceNumberTests(TestCase):
    def test_save_takes_a_number_once(self) -> None:
        invoice = Invoice.objects.create(customer="ACME", total=Decimal("10.00"))
        number = invoice.number
        invoice.total = Decimal("12.50")
        invoice.save()
        invoice.refresh_from_db()
        self.assertTrue(number)
        self.assertEqual(invoice.number, number)

    def test_invoices_get_consecutive_numbers(self) -> None:
        first = Invoice.objects.create(customer="ACME", total=Decimal("1.00"))
        second = Invoice.objects.create(customer="Initech", total=Decimal("2.00"))
        self.assertEqual(sequence(second.number), sequence(first.number) + 1)

    def test_a_save_retried_after_a_crash_gets_the_same_number_again(self) -> None:
        uid = uuid.uuid4()
        with self.assertRaises(Crash), transaction.atomic():
            lost = Invoice(uid=uid, customer="ACME", total=Decimal("3.00"))
            lost.save()
            raise Crash
        self.assertFalse(Invoice.objects.filter(uid=uid).exists())
        retried = Invoice.objects.create(uid=uid, customer="ACME", total=Decimal("3.00"))
        self.assertEqual(retried.number, lost.number)

    def test_bulk_create_numbered_fills_the_list_with_one_batch(self) -> None:
        invoices = [Invoice(customer=f"Customer {i}", total=Decimal(i)) for i in range(5)]
        docnum = client()
        with (
            mock.patch.object(docnum, "batch", wraps=docnum.batch) as batch,
            mock.patch.object(docnum, "next", wraps=docnum.next) as single,
        ):
            created = Invoice.objects.bulk_create_numbered(invoices)
        batch.assert_called_once()
        single.assert_not_called()
        values = [sequence(invoice.number) for invoice in created]
        self.assertEqual(values, list(range(values[0], values[0] + 5)))
        self.assertEqual(Invoice.objects.count(), 5)

    def test_bulk_create_numbered_again_after_a_crash_reuses_the_numbers(self) -> None:
        uids = [uuid.uuid4() for _ in range(3)]

        def draft() -> list[Invoice]:
            return [Invoice(uid=uid, customer="ACME", total=Decimal(1)) for uid in uids]

        with self.assertRaises(Crash), transaction.atomic():
            lost = Invoice.objects.bulk_create_numbered(draft())
            raise Crash
        again = Invoice.objects.bulk_create_numbered(draft())
        self.assertEqual([i.number for i in again], [i.number for i in lost])

    def test_bulk_create_numbered_refuses_mixed_dates(self) -> None:
        invoices = [
            Invoice(customer="ACME", total=Decimal(1), issued_on=datetime.date(2026, 1, 31)),
            Invoice(customer="ACME", total=Decimal(1), issued_on=datetime.date(2026, 2, 1)),
        ]
        with self.assertRaises(ValueError):
            Invoice.objects.bulk_create_numbered(invoices)
        self.assertFalse(Invoice.objects.exists())


class ReservedNumberTests(TransactionTestCase):
    """Real commits and rollbacks: the number follows the transaction that saves the invoice."""

    def test_a_committed_save_confirms_its_number(self) -> None:
        invoice = Invoice.objects.create(customer="ACME", total=Decimal("10.00"))
        entry = client().get_number(settings.DOCNUM_INVOICE_SERIES, invoice.number)
        self.assertEqual(entry.status, "issued")

    def test_a_rolled_back_save_leaves_no_hole(self) -> None:
        with self.assertRaises(Crash), transaction.atomic():
            lost = Invoice.objects.create(customer="ACME", total=Decimal("1.00"))
            number = lost.number
            raise Crash
        self.assertFalse(Invoice.objects.exists())
        kept = Invoice.objects.create(customer="Initech", total=Decimal("2.00"))
        self.assertEqual(kept.number, number)
        entry = client().get_number(settings.DOCNUM_INVOICE_SERIES, kept.number)
        self.assertEqual(entry.status, "issued")

    def test_a_save_the_database_refuses_releases_its_number(self) -> None:
        first = Invoice.objects.create(customer="ACME", total=Decimal("1.00"))
        with self.assertRaises(IntegrityError):
            Invoice.objects.create(uid=first.uid, customer="ACME", total=Decimal("1.00"))
        after = Invoice.objects.create(customer="ACME", total=Decimal("2.00"))
        self.assertEqual(sequence(after.number), sequence(first.number) + 1)
