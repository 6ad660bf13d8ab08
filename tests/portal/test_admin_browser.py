"""The admin portal in a real browser (Debian Chromium) against a real ``docnum serve``.

Set DOCNUM_SCREENSHOTS to a folder (docs/ for the documentation's pictures) to keep screenshots
of the series page at desktop and phone widths.
"""

import asyncio
import csv
import datetime
import io
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.processes import ServiceProcess
from harness.tenants import Tenant

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("admin-browser")]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
DOCUMENT_DATE = "2026-03-04"


@pytest.fixture
async def page(browser: Any, service: ServiceProcess) -> AsyncIterator[Any]:
    context = await browser.new_context(
        base_url=service.url, viewport=DESKTOP, accept_downloads=True
    )
    context.set_default_timeout(15_000)
    try:
        yield await context.new_page()
    finally:
        await context.close()


@pytest.fixture
async def api(service: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        yield client


def screenshot_path(tmp_path: Path, name: str) -> Path:
    folder = os.environ.get("DOCNUM_SCREENSHOTS")
    return Path(folder) / name if folder else tmp_path / name


async def sign_in(page: Any, tenant: Tenant) -> None:
    await page.goto("/admin/series")
    assert page.url.endswith("/admin/sign-in?next=%2Fadmin%2Fseries")
    await page.get_by_label("Admin API key").fill(tenant.admin_key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Series", exact=True).wait_for()


async def test_series_ledger_void_gaps_and_csv(
    page: Any, api: httpx.AsyncClient, tenant: Tenant, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    await sign_in(page, tenant)
    await page.get_by_role("link", name="New series").click()
    await page.get_by_label("Name", exact=True).fill("invoice")
    await page.get_by_label("Counter reset").select_option("yearly")
    await page.get_by_label("Description").fill("Customer invoices, EU entities")
    await page.get_by_label("Format").fill("INV-{YYYY}")
    preview = page.locator("#preview-output")
    await expect(preview).to_contain_text("needs a {seq} token")
    await page.get_by_role("button", name="Create series").click()

    error = page.locator("#error-format")
    await expect(error).to_contain_text("the template needs a {seq} token")
    await expect(page.get_by_label("Format")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Format")).to_have_value("INV-{YYYY}")

    await page.get_by_label("Format").fill("INV-{YYYY}-{seq:06}")
    year = datetime.date.today().year
    await expect(preview).to_contain_text(f"INV-{year}-000001")
    await page.get_by_label("Also show for date").fill(DOCUMENT_DATE)
    await expect(preview).to_contain_text("INV-2026-000001")
    await page.get_by_role("button", name="Create series").click()
    await expect(page.get_by_role("status")).to_have_text("The series was created.")
    await expect(page.get_by_role("heading", name="invoice")).to_be_visible()
    await expect(page.get_by_text("Customer invoices, EU entities")).to_be_visible()

    for _ in range(5):
        issued = await api.post(
            "/series/invoice/next", json={"date": DOCUMENT_DATE}, headers=tenant.issuer
        )
        assert issued.status_code == 201, issued.text
    await page.reload()
    ledger = page.locator("section", has=page.get_by_role("heading", name="Ledger", exact=True))
    rows = ledger.locator("tbody tr")
    await expect(rows).to_have_count(5)
    await expect(rows.first).to_contain_text("INV-2026-000001")

    await page.get_by_role("link", name="Void INV-2026-000003").click()
    await expect(page.get_by_role("heading", name="Void INV-2026-000003?")).to_be_visible()
    await page.get_by_label("Reason").fill("Customer cancelled the order")
    await page.get_by_role("button", name="Void number").click()
    await expect(page.get_by_role("status")).to_have_text("INV-2026-000003 was voided.")
    voided = page.locator("tr.voided")
    await expect(voided).to_have_count(1)
    await expect(voided).to_contain_text("INV-2026-000003")
    await expect(voided).to_contain_text("Customer cancelled the order")
    await expect(page.get_by_role("link", name="Void INV-2026-000003")).to_have_count(0)

    await page.get_by_label("Period", exact=True).select_option("2026")
    await page.get_by_role("button", name="Apply").click()
    gaps = page.locator("section", has=page.get_by_role("heading", name=re.compile("Gap report")))
    await expect(gaps).to_contain_text("period 2026")
    await expect(gaps).to_contain_text("No gaps: every value from 1 to 5 is in the ledger.")

    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download CSV").click()
    download = await info.value
    assert download.suggested_filename == "invoice-2026-ledger.csv"
    saved = Path(await download.path())
    table = list(csv.DictReader(io.StringIO(await asyncio.to_thread(saved.read_text))))
    assert [r["number"] for r in table] == [f"INV-2026-00000{i}" for i in range(1, 6)]
    assert [r["status"] for r in table] == ["issued"] * 2 + ["voided"] + ["issued"] * 2
    assert table[2]["void_reason"] == "Customer cancelled the order"

    await page.screenshot(path=screenshot_path(tmp_path, "admin-series.png"), full_page=True)
    await page.set_viewport_size(PHONE)
    await ledger.evaluate("section => section.scrollIntoView()")
    await page.screenshot(path=screenshot_path(tmp_path, "admin-phone.png"))
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "nothing scrolls sideways on a phone"


async def test_gap_report_shows_values_missing_from_the_ledger(
    page: Any, api: httpx.AsyncClient, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """A cached series: two processes each reserve a block, so the ledger has a hole between."""
    from playwright.async_api import expect

    # Blocks large enough that neither process reserves a second one during the test.
    body = {"name": "tickets", "format": "T-{seq}", "mode": "cached", "block_size": 100}
    created = await api.post("/series", json={**body, "ledger": True}, headers=tenant.admin)
    assert created.status_code == 201, created.text
    for issuer in (api, api, client):
        issued = await issuer.post("/series/tickets/next", headers=tenant.issuer)
        assert issued.status_code == 201, issued.text
    # The in-process issuer also reserves its next block in the background: wait until the
    # counter stops moving, so the page and the report read the same top.
    report = await settled_gaps(api, tenant, "tickets")
    assert report["missing"] > 0 and report["gaps"], report

    await sign_in(page, tenant)
    await page.goto("/admin/series/tickets")
    gaps = page.locator("section", has=page.get_by_role("heading", name=re.compile("Gap report")))
    await expect(gaps).to_contain_text(
        f"{report['missing']} values between 1 and {report['last_value']} are not in the ledger."
    )
    runs = gaps.locator("tbody tr")
    await expect(runs).to_have_count(len(report["gaps"]))
    for row, gap in zip(await runs.all(), report["gaps"], strict=True):
        cells = [int(c.replace(",", "")) for c in await row.locator("td").all_inner_texts()]
        assert cells == [gap["first"], gap["last"], gap["count"]]


async def settled_gaps(api: httpx.AsyncClient, tenant: Tenant, name: str) -> dict[str, Any]:
    """The gap report once two reads 0.2 s apart agree (background reservations are done)."""
    deadline = time.monotonic() + 10
    report = (await api.get(f"/series/{name}/gaps", headers=tenant.admin)).json()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        again = (await api.get(f"/series/{name}/gaps", headers=tenant.admin)).json()
        if again == report:
            return report
        report = again
    raise AssertionError(f"the gap report never settled: {report}")


async def test_keys_audit_and_sign_out(page: Any, api: httpx.AsyncClient, tenant: Tenant) -> None:
    from playwright.async_api import expect

    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    # Signing in works from the keyboard alone.
    await page.goto("/admin/keys")
    await page.get_by_label("Admin API key").focus()
    await page.keyboard.type(tenant.admin_key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="API keys")).to_be_visible()

    await page.get_by_label("Name").fill("billing service")
    await page.get_by_label("Scope").select_option("issue")
    await page.get_by_role("button", name="Create key").click()
    shown = page.locator("#new-key")
    key = await shown.input_value()
    assert re.fullmatch(r"dn_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", key)
    prefix = key.split("_")[1]
    await page.get_by_role("button", name="Copy").click()
    await expect(page.locator("#copy-status")).to_have_text("The key is on your clipboard.")
    assert await page.evaluate("navigator.clipboard.readText()") == key
    assert (await api.get("/series", headers={"Authorization": f"Bearer {key}"})).status_code == 200

    await page.goto("/admin/keys")
    assert key not in await page.content(), "a key is shown once"
    row = page.locator("tr", has_text=prefix)
    await expect(row).to_contain_text("billing service")
    await expect(row).to_contain_text("issue")

    await row.get_by_role("link", name=f"Revoke {prefix}").click()
    await page.get_by_role("button", name="Revoke key").click()
    await expect(page.get_by_role("status")).to_have_text(f"Key {prefix} was revoked.")
    await expect(page.locator("tr", has_text=prefix)).to_have_count(0)
    refused = await api.get("/series", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401

    await page.get_by_role("link", name="Audit").click()
    await page.get_by_label("Action").select_option("key.revoked")
    await page.get_by_role("button", name="Apply").click()
    rows = page.locator("tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text(prefix)
    await expect(rows.first).to_contain_text(f"key {tenant.admin_key.split('_')[1]}")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("status")).to_have_text("You are signed out.")
    for path in ("/admin/series", "/admin/keys", "/admin/audit"):
        await page.goto(path)
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


async def test_counters_per_branch_and_a_refused_format_beside_its_field(
    page: Any, api: httpx.AsyncClient, tenant: Tenant
) -> None:
    from playwright.async_api import expect

    body = {"name": "po", "format": "PO-{var:branch}-{seq:04}"}
    assert (await api.post("/series", json=body, headers=tenant.admin)).status_code == 201
    for branch in ("BR07", "BR08", "BR07"):
        issued = await api.post(
            "/series/po/next", json={"variables": {"branch": branch}}, headers=tenant.issuer
        )
        assert issued.status_code == 201, issued.text
    refused = await api.patch(
        "/series/po", json={"format": "PO-{var:branch}-1{seq:04}"}, headers=tenant.admin
    )
    assert refused.status_code == 409, refused.text

    await sign_in(page, tenant)
    await page.goto("/admin/series/po")
    counters = page.locator("section", has=page.get_by_role("heading", name="Counters"))
    rows = counters.locator("tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text("branch=BR08")
    await expect(rows.nth(1)).to_contain_text("branch=BR07")
    await expect(rows.nth(1).locator("td.num")).to_have_text("2")
    await page.get_by_role("link", name="Numbers of all, branch=BR08").click()
    ledger = page.locator("section", has=page.get_by_role("heading", name="Ledger", exact=True))
    await expect(ledger.locator("tbody tr")).to_have_count(1)
    await expect(ledger.locator("tbody tr")).to_contain_text("PO-BR08-0001")

    await page.get_by_role("link", name="Edit").click()
    await page.get_by_label("Format", exact=True).fill("PO-{var:branch}-1{seq:04}")
    detail = refused.json()["detail"]
    await expect(page.locator("#preview-output")).to_contain_text(detail)
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator("#error-format")).to_have_text(detail)
    await expect(page.get_by_label("Format", exact=True)).to_have_attribute("aria-invalid", "true")
