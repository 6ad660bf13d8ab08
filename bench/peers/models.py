"""The thread's models: its counter row, and the invoices its trigger numbers."""

from typing import ClassVar

from django.db import models, transaction


class ControlSequence(models.Model):
    name = models.CharField(max_length=100, unique=True)
    sequence_number = models.IntegerField(default=0)
    prefix = models.CharField(max_length=10)

    @classmethod
    def get_next_number(cls, sequence_name: str) -> int:
        with transaction.atomic():
            sequence = cls.objects.select_for_update().get(name=sequence_name)
            sequence.sequence_number += 1
            sequence.save()
            number: int = sequence.sequence_number
            return number


class Invoice(models.Model):
    # Set by the BEFORE INSERT trigger; a database default makes Django read it back (RETURNING).
    invoice_number = models.CharField(max_length=20, unique=True, db_default="")

    class Meta:
        db_table = "invoices"
        indexes: ClassVar[list[models.Index]] = []
