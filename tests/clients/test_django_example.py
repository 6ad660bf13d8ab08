"""The Django example's own tests, run by Django's test runner against a real ``docnum serve``."""

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from harness.processes import ServiceProcess
from harness.tenants import Tenant

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django"
SERIES = "invoice"


def test_django_example_numbers_invoices_through_a_live_service(
    service: ServiceProcess, tenant: Tenant
) -> None:
    with httpx.Client(base_url=service.url, headers=tenant.admin) as admin:
        body = {"name": SERIES, "format": "INV-{YYYY}-{seq:06}", "reset": "yearly"}
        created = admin.post("/series", json=body)
        assert created.status_code == 201, created.text
        env = {
            **os.environ,
            "DOCNUM_URL": service.url,
            "DOCNUM_API_KEY": tenant.issue_key,
            "DOCNUM_INVOICE_SERIES": SERIES,
        }
        run = subprocess.run(
            [sys.executable, "manage.py", "test", "--noinput", "-v", "2"],
            cwd=EXAMPLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        ledger = admin.get(f"/series/{SERIES}/numbers", params={"limit": 1000})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    written = (EXAMPLE / "invoices" / "tests.py").read_text()
    expected = len(re.findall(r"^    def test_", written, re.MULTILINE))
    assert f"Ran {expected} tests" in output, output
    assert ledger.status_code == 200, ledger.text
    values = sorted(item["value"] for item in ledger.json()["items"])
    # Gapless, although two of the example's tests crash after taking numbers and retry.
    assert values == list(range(1, len(values) + 1))
    assert values, "the example issued no numbers"
