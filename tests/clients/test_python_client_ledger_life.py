"""The Python client's document references, go-live counters, numbers recorded from elsewhere
and preview, against a real ``docnum serve``."""

import datetime

import pytest
from docnum_client import (
    AsyncDocnumClient,
    CounterChange,
    CounterNotRaised,
    DocnumClient,
    NumberExists,
    NumberUnreadable,
)

from harness.processes import ServiceProcess
from harness.tenants import Tenant
from tests.clients.test_python_client import make_series

DAY = datetime.date(2026, 5, 1)


async def test_the_client_keeps_finds_and_changes_document_references(
    service: ServiceProcess, tenant: Tenant
) -> None:
    name = await make_series(service, tenant, "refs", format="R/{seq}")
    with DocnumClient(service.url, tenant.issue_key) as docnum:
        one = docnum.next(name, DAY, document_ref="SO-1")
        docnum.batch(name, 2, DAY, document_ref="SO-2")
        assert docnum.get_number(name, one.number).document_ref == "SO-1"
        assert [e.value for e in docnum.ledger(name, document_ref="SO-2")] == [2, 3]
        changed = docnum.annotate(name, one.number, "INV-1")
    assert (changed.number, changed.document_ref, changed.external) == ("R/1", "INV-1", False)


async def test_the_client_sets_a_counter_records_a_number_and_previews(
    service: ServiceProcess, tenant: Tenant
) -> None:
    name = await make_series(service, tenant, "live", format="L-{YYYY}-{seq}", reset="yearly")
    with DocnumClient(service.url, tenant.admin_key) as docnum:
        changed = docnum.set_counter(name, "2026", 4711, "go-live")
        with pytest.raises(CounterNotRaised):
            docnum.set_counter(name, "2026", 10, "down")
        recorded = docnum.record_external(name, "L-2026-4713", DAY, document_ref="PAPER-1")
        with pytest.raises(NumberExists):
            docnum.record_external(name, "L-2026-4713", DAY)
        with pytest.raises(NumberUnreadable):
            docnum.record_external(name, "L-2025-4714", DAY)
    assert changed == CounterChange(
        period="2026", variables={}, previous=None, last_value=4711, voided=4711
    )
    assert (recorded.value, recorded.external, recorded.document_ref) == (4713, True, "PAPER-1")
    async with AsyncDocnumClient(service.url, tenant.issue_key) as docnum:
        preview = await docnum.preview_next(name, DAY)
        issued = await docnum.next(name, DAY)
    assert preview.number == issued.number == "L-2026-4714"
