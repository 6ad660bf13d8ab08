"""The admin portal over HTTP: sessions, CSRF, tenant isolation, escaping, headers, forms.

Browser-level journeys are in test_admin_browser.py; these drive the same pages with httpx, so
each security property is checked directly on the responses.
"""

import csv
import datetime
import html
import io
import os
import re
import secrets
import stat
import zipfile
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import Response
from pydantic import ValidationError

from app.admin.session import COOKIE, SESSION_SECONDS, Sessions, load_secret
from app.settings import Settings
from harness.tenants import Tenant, create_series
from tests.support.api import assert_problem

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SCRIPT = "<script>alert(1)</script>"


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str, next_path: str = "") -> httpx.Response:
    page = await client.get("/admin/sign-in")
    assert page.status_code == 200, page.text
    return await client.post(
        "/admin/sign-in", data={"csrf": csrf_of(page), "key": key, "next": next_path}
    )


async def signed_in_csrf(client: httpx.AsyncClient, tenant: Tenant) -> str:
    """Sign in with the tenant's admin key; return the CSRF token of the session's forms."""
    response = await sign_in(client, tenant.admin_key)
    assert response.status_code == 303, response.text
    return csrf_of(await client.get("/admin/series"))


@pytest.fixture
async def second_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A second client with a cookie jar of its own, like a second browser."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://docnum.test") as client:
        yield client


def prefix_of(key: str) -> str:
    return key.split("_")[1]


# --- sessions ---------------------------------------------------------------------------------

PROTECTED_PAGES = ["/admin/series", "/admin/series/_new", "/admin/keys", "/admin/audit"]


@pytest.mark.parametrize("path", PROTECTED_PAGES)
async def test_without_a_session_pages_send_to_sign_in(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/sign-in?next={path.replace('/', '%2F')}"


async def test_without_a_session_forms_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "kept")
    response = await client.post("/admin/series/kept/archive", data={"csrf": "x"})
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/sign-in"
    series = await client.get("/series/kept", headers=tenant.admin)
    assert series.json()["archived"] is False


async def test_the_portal_root_leads_to_the_series(client: httpx.AsyncClient) -> None:
    for path in ("/admin", "/admin/"):
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/admin/series"


async def test_the_preview_needs_a_session(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/preview", params={"format": "A-{seq}"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_sign_in_sets_a_strict_http_only_expiring_cookie(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await sign_in(client, tenant.admin_key, "/admin/keys")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/keys"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/admin", f"Max-Age={SESSION_SECONDS}"):
        assert attribute.lower() in cookie.lower(), cookie
    assert "secure" not in cookie.lower()
    assert tenant.admin_key not in cookie
    keys_page = await client.get("/admin/keys")
    assert keys_page.status_code == 200
    assert prefix_of(tenant.admin_key) in keys_page.text


def test_cookies_are_secure_when_configured(settings: Settings) -> None:
    sessions = Sessions(settings.model_copy(update={"secure_cookies": True}))
    response = Response()
    sessions.save(response, sessions.new(key="0123abcd"))
    assert "secure" in response.headers["set-cookie"].lower()


async def test_an_issue_key_cannot_sign_in(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await sign_in(client, tenant.issue_key)
    assert response.status_code == 403
    assert "admin scope" in response.text
    assert (await client.get("/admin/series")).status_code == 303


@pytest.mark.parametrize("key", ["", "not a key", "dn_00000000_" + "A" * 43])
async def test_an_unknown_key_cannot_sign_in(client: httpx.AsyncClient, key: str) -> None:
    response = await sign_in(client, key)
    assert response.status_code == 401
    assert "unknown or revoked" in response.text
    assert (await client.get("/admin/series")).status_code == 303


async def test_sign_in_goes_only_to_portal_pages(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for target in ("https://evil.example/", "//evil.example/admin/", "/admin//evil.example"):
        client.cookies.clear()
        response = await sign_in(client, tenant.admin_key, target)
        assert response.headers["location"] == "/admin/series", target


async def test_sign_out_ends_the_session(client: httpx.AsyncClient, tenant: Tenant) -> None:
    token = await signed_in_csrf(client, tenant)
    response = await client.post("/admin/sign-out", data={"csrf": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/sign-in?notice=signed-out"
    assert "max-age=0" in response.headers["set-cookie"].lower()
    assert (await client.get("/admin/series")).status_code == 303
    assert "You are signed out." in (await client.get("/admin/sign-in?notice=signed-out")).text


async def test_revoking_the_key_ends_its_sessions_at_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    made = await client.post("/keys", json={"scope": "admin"}, headers=tenant.admin)
    await signed_in_csrf(client, Tenant(tenant.name, tenant.id, made.json()["key"], ""))
    assert (await client.get("/admin/series")).status_code == 200
    await client.delete(f"/keys/{made.json()['prefix']}", headers=tenant.admin)
    assert (await client.get("/admin/series")).status_code == 303


async def test_an_altered_cookie_is_no_session(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await signed_in_csrf(client, tenant)
    value = client.cookies[COOKIE]
    payload, _, signature = value.partition(".")
    client.cookies.clear()
    client.cookies.set(COOKIE, payload + "." + signature[::-1], domain="docnum.test", path="/admin")
    assert (await client.get("/admin/series")).status_code == 303


def test_the_generated_secret_is_kept_private_and_reused(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path / "data", session_secret=None)
    first = load_secret(settings)
    assert len(first) >= 32
    assert load_secret(settings) == first
    mode = stat.S_IMODE(os.stat(tmp_path / "data" / "session-secret").st_mode)
    assert mode == 0o600
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["session-secret"]
    secret = secrets.token_urlsafe(48)
    configured = Settings(data_dir=tmp_path / "data", session_secret=secret)
    assert load_secret(configured) == secret.encode()


# Strong: what the documentation tells to generate. Weak: short, repeated, few characters.
STRONG_SECRETS = (secrets.token_urlsafe(32), secrets.token_hex(32), secrets.token_urlsafe(48))
WEAK_SECRETS = ("s" * 40, "short", "changeme-changeme-changeme-changeme", "0123" * 10)


def test_a_configured_session_secret_must_be_strong() -> None:
    for weak in (*WEAK_SECRETS, secrets.token_hex(8)):
        with pytest.raises(ValidationError) as refused:
            Settings(session_secret=weak)
        [error] = refused.value.errors(include_input=False)
        assert error["msg"].startswith("DOCNUM_SESSION_SECRET is too weak: it has "), error
        assert weak not in error["msg"]
    for strong in STRONG_SECRETS:
        assert Settings(session_secret=strong).session_secret == strong
    assert Settings(session_secret="").session_secret == ""  # empty is unset, as Compose sends it


# --- CSRF -------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong", "0" * 64])
async def test_a_form_without_the_right_csrf_token_is_refused(
    client: httpx.AsyncClient, tenant: Tenant, token: str | None
) -> None:
    await signed_in_csrf(client, tenant)
    form = {"name": "csrf-target", "format": "C-{seq}"}
    if token is not None:
        form["csrf"] = token
    response = await client.post("/admin/series/_new", data=form)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "did not come from this site" in response.text
    assert (await client.get("/series/csrf-target", headers=tenant.admin)).status_code == 404


async def test_a_token_of_another_session_is_refused(
    client: httpx.AsyncClient, second_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    other_token = await signed_in_csrf(second_client, tenant)
    own_token = await signed_in_csrf(client, tenant)
    assert other_token != own_token
    form = {"name": "csrf-other", "format": "C-{seq}", "csrf": other_token}
    assert (await client.post("/admin/series/_new", data=form)).status_code == 403
    form["csrf"] = own_token
    assert (await client.post("/admin/series/_new", data=form)).status_code == 303


async def test_the_sign_in_form_needs_its_token_too(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await client.get("/admin/sign-in")
    response = await client.post("/admin/sign-in", data={"key": tenant.admin_key})
    assert response.status_code == 403
    assert (await client.get("/admin/series")).status_code == 303


# --- tenants ----------------------------------------------------------------------------------


async def test_another_tenants_admin_sees_and_touches_none_of_it(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await create_series(client, tenant, "private-ledger", description="tenant A only")
    issued = await client.post("/series/private-ledger/next", headers=tenant.issuer)
    number = issued.json()["number"]
    token = await signed_in_csrf(client, other_tenant)

    listing = await client.get("/admin/series")
    assert "private-ledger" not in listing.text
    for path in (
        "/admin/series/private-ledger",
        "/admin/series/private-ledger/edit",
        "/admin/series/private-ledger/ledger.csv",
        f"/admin/series/private-ledger/void?number={number}",
        f"/admin/keys/{prefix_of(tenant.admin_key)}/revoke",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "tenant A only" not in response.text
    changes = [
        ("/admin/series/private-ledger/edit", {"format": "X-{seq}"}),
        ("/admin/series/private-ledger/archive", {}),
        ("/admin/series/private-ledger/void", {"number": number, "reason": "mine now"}),
        (f"/admin/keys/{prefix_of(tenant.admin_key)}/revoke", {}),
    ]
    for path, form in changes:
        response = await client.post(path, data={**form, "csrf": token})
        assert response.status_code == 404, path
    keys_page = await client.get("/admin/keys")
    assert prefix_of(tenant.admin_key) not in keys_page.text
    audit_page = await client.get("/admin/audit")
    assert "private-ledger" not in audit_page.text
    preview = await client.get(
        "/admin/preview", params={"series": "private-ledger", "format": "P-{seq}"}
    )
    assert preview.json()["samples"][0]["number"] == "P-1"

    series = await client.get("/series/private-ledger", headers=tenant.admin)
    assert series.json()["format"] == "T-{seq}" and series.json()["archived"] is False
    ledger = await client.get("/series/private-ledger/numbers", headers=tenant.admin)
    assert ledger.json()["items"][0]["status"] == "issued"
    assert (await client.get("/series", headers=tenant.admin)).status_code == 200


# --- pages ------------------------------------------------------------------------------------


async def test_stored_markup_is_shown_as_text(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create_series(client, tenant, "xss", description=SCRIPT, mode="gapless")
    issued = await client.post("/series/xss/next", headers=tenant.issuer)
    number = issued.json()["number"]
    voided = await client.post(
        f"/series/xss/numbers/{number}/void", json={"reason": SCRIPT}, headers=tenant.admin
    )
    assert voided.status_code == 200, voided.text
    await client.post("/keys", json={"name": SCRIPT}, headers=tenant.admin)
    await signed_in_csrf(client, tenant)
    for path in ("/admin/series", "/admin/series/xss", "/admin/keys", "/admin/audit"):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert SCRIPT not in page.text, path
        assert html.escape(SCRIPT) in page.text, path


async def pages_of_a_tenant(client: httpx.AsyncClient, tenant: Tenant) -> list[str]:
    await create_series(client, tenant, "pages", mode="gapless")
    issued = await client.post("/series/pages/next", headers=tenant.issuer)
    number = issued.json()["number"]
    return [
        "/admin/series",
        "/admin/series/_new",
        "/admin/series/pages",
        "/admin/series/pages/edit",
        "/admin/series/pages/archive",
        f"/admin/series/pages/void?number={number}",
        "/admin/keys",
        f"/admin/keys/{prefix_of(tenant.issue_key)}/revoke",
        "/admin/audit",
        "/admin/series/missing",
        "/admin/no-such-page",
    ]


async def test_every_portal_page_has_a_strict_content_security_policy(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    pages = await pages_of_a_tenant(client, tenant)
    sign_in_page = await client.get("/admin/sign-in")
    await signed_in_csrf(client, tenant)
    responses = [sign_in_page] + [await client.get(path) for path in pages]
    for response in responses:
        assert response.status_code in (200, 404), response.url
        assert_portal_page(response)


def assert_portal_page(response: httpx.Response) -> None:
    """A page of the portal, with its security headers and nothing its policy would block."""
    where = f"{response.request.method} {response.url} {response.status_code}"
    assert response.headers["content-type"].startswith("text/html"), where
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe" not in policy, where
    assert "frame-ancestors 'none'" in policy, where
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    # Nothing the policy would block: no inline script, no inline style.
    assert re.search(r"<script(?![^>]*\bsrc=)", response.text) is None, where
    assert " style=" not in response.text and "<style" not in response.text, where
    assert re.search(r"\son[a-z]+=", response.text) is None, where


async def test_every_portal_error_is_a_page_with_the_portals_headers(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    await create_series(client, tenant, "nul", format="N-{seq}")
    assert (await client.post("/series/nul/next", headers=tenant.issuer)).status_code == 201
    token = await signed_in_csrf(client, tenant)
    void = {"number": "N-\x00", "reason": "typo", "csrf": token}
    too_large = {"csrf": token, "name": "big", "description": "x" * settings.max_body_bytes}
    answered = [
        # Text the database cannot store, from a form and from an address.
        (422, await client.post("/admin/series/nul/void", data=void)),
        (422, await client.get("/admin/series/nul/void", params={"number": "N-\x00"})),
        # Refused before any portal route runs: a method no page has, a body over the limit.
        (405, await client.put("/admin/series")),
        (413, await client.post("/admin/series/_new", data=too_large)),
    ]
    for status, response in answered:
        assert response.status_code == status, (response.url, response.text)
        assert_portal_page(response)
        assert f"Error {status}" in response.text
    assert answered[2][1].headers["allow"] == "GET, POST"
    ledger = await client.get("/series/nul/numbers", headers=tenant.admin)
    assert [entry["status"] for entry in ledger.json()["items"]] == ["issued"]


async def test_every_input_has_a_label(client: httpx.AsyncClient, tenant: Tenant) -> None:
    pages = await pages_of_a_tenant(client, tenant)
    await signed_in_csrf(client, tenant)
    for path in pages:
        page = (await client.get(path)).text
        labelled = set(re.findall(r'<label[^>]* for="([^"]+)"', page))
        for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", page):
            if 'type="hidden"' in tag:
                continue
            found = re.search(r'id="([^"]+)"', tag)
            assert found and found.group(1) in labelled, (path, tag)


async def test_static_files_are_served_from_the_package(client: httpx.AsyncClient) -> None:
    for name, media_type in (("portal.css", "text/css"), ("portal.js", "text/javascript")):
        response = await client.get(f"/admin/static/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media_type)
    page = await client.get("/admin/sign-in")
    assert "http://" not in page.text and "https://" not in page.text


# --- forms ------------------------------------------------------------------------------------


async def test_a_bad_format_shows_the_apis_own_error_beside_the_field(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = {"name": "badfmt", "format": "INV-{YYYY}", "reset": "yearly"}
    api = await client.post("/series", json=body, headers=tenant.admin)
    assert api.status_code == 422
    message = api.json()["errors"][0]["message"]
    token = await signed_in_csrf(client, tenant)
    page = await client.post("/admin/series/_new", data={**body, "csrf": token})
    assert page.status_code == 422
    assert f'<p class="field-error" id="error-format">{html.escape(message)}</p>' in page.text
    assert 'value="INV-{YYYY}"' in page.text
    fixed = await client.post(
        "/admin/series/_new", data={**body, "format": "INV-{YYYY}-{seq:04}", "csrf": token}
    )
    assert fixed.status_code == 303
    assert fixed.headers["location"] == "/admin/series/badfmt?notice=created"
    series = (await client.get("/series/badfmt", headers=tenant.admin)).json()
    assert series["format"] == "INV-{YYYY}-{seq:04}" and series["reset"] == "yearly"


async def test_cross_field_rules_and_conflicts_appear_beside_their_fields(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "taken")
    token = await signed_in_csrf(client, tenant)
    cases = [
        ({"name": "taken", "format": "A-{seq}"}, "name", 409),
        ({"name": "maxed", "format": "A-{seq}", "start": "5", "max_value": "2"}, "max_value", 422),
        ({"name": "tz", "format": "A-{seq}", "timezone": "Mars/Base"}, "timezone", 422),
        ({"name": "Bad Name", "format": "A-{seq}"}, "name", 422),
        ({"name": "nolog", "format": "A-{seq}", "ledger": "false"}, "ledger", 422),
    ]
    for form, field, status in cases:
        page = await client.post("/admin/series/_new", data={**form, "csrf": token})
        assert page.status_code == status, (form, page.text)
        assert f'id="error-{field}"' in page.text, form


async def test_editing_keeps_the_rules_of_patch(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create_series(client, tenant, "ed", format="E-{seq}")
    await client.post("/series/ed/next", headers=tenant.issuer)
    token = await signed_in_csrf(client, tenant)
    form = await client.get("/admin/series/ed/edit")
    assert re.search(r'id="field-mode"[^>]* disabled', form.text), "mode is fixed once used"
    changed = await client.post(
        "/admin/series/ed/edit",
        data={
            "format": "ED-{seq:03}",
            "description": "renamed",
            "timezone": "UTC",
            "ledger": "true",
            "block_size": "100",
            "max_value": "",
            "csrf": token,
        },
    )
    assert changed.status_code == 303, changed.text
    series = (await client.get("/series/ed", headers=tenant.admin)).json()
    assert series["format"] == "ED-{seq:03}" and series["description"] == "renamed"
    cleared = await client.post(
        "/admin/series/ed/edit", data={"format": "ED-{seq:03}", "description": "", "csrf": token}
    )
    assert cleared.status_code == 303, cleared.text
    assert (await client.get("/series/ed", headers=tenant.admin)).json()["description"] == ""
    refused = await client.post(
        "/admin/series/ed/edit", data={"format": "ED-{seq}", "mode": "cached", "csrf": token}
    )
    assert refused.status_code == 409
    assert "cannot change once numbers were issued" in refused.text
    assert (await client.get("/series/ed", headers=tenant.admin)).json()["mode"] == "gapless"


async def test_the_preview_renders_the_next_number_with_the_apis_checks(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "pv", format="PV-{YYYY}-{seq:04}", reset="yearly")
    for _ in range(3):
        await client.post("/series/pv/next", json={"date": "2026-02-01"}, headers=tenant.issuer)
    await signed_in_csrf(client, tenant)

    existing = await client.get(
        "/admin/preview",
        params={"series": "pv", "format": "PV-{YYYY}-{seq:06}", "date": "2026-07-01"},
    )
    samples = existing.json()["samples"]
    assert samples[1] == {
        "date": "2026-07-01",
        "format": "PV-{YYYY}-{seq:06}",
        "period": "2026",
        "value": 4,
        "number": "PV-2026-000004",
        "variables": {},
    }
    fresh = await client.get(
        "/admin/preview",
        params={
            "format": "{var:site}/{FY}/{seq}",
            "reset": "yearly",
            "fiscal_year_start": "4",
            "start": "10",
            "date": "2026-03-31",
            "variables": "site=LYS",
        },
    )
    assert fresh.json()["samples"][1]["number"] == "LYS/2025/10"
    assert fresh.json()["variables"] == ["site"]
    missing = await client.get(
        "/admin/preview", params={"format": "{var:site}-{seq}", "date": "2026-03-31"}
    )
    assert missing.json()["samples"][1]["error"] == "missing variable 'site'"

    body = {"name": "pv2", "format": "PV-{seq}", "reset": "monthly"}
    api = await client.post("/series", json=body, headers=tenant.admin)
    bad = await client.get("/admin/preview", params=body)
    assert bad.json()["errors"] == {"format": api.json()["errors"][0]["message"]}
    bad_date = await client.get(
        "/admin/preview", params={"format": "A-{seq}", "date": "2026-13-01"}
    )
    assert "date" in bad_date.json()["errors"]


async def test_portal_changes_are_audited_under_the_signed_in_key(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    token = await signed_in_csrf(client, tenant)
    await client.post(
        "/admin/series/_new", data={"name": "aud", "format": "A-{seq}", "csrf": token}
    )
    trail = await client.get("/audit", headers=tenant.admin)
    newest = trail.json()["items"][0]
    assert newest["action"] == "series.created" and newest["series"] == "aud"
    assert newest["actor"] == f"key {prefix_of(tenant.admin_key)} (test admin)"


async def test_the_ledger_pages_by_keyset_and_downloads_the_apis_csv(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "long", format="L-{seq:03}")
    issued = await client.post("/series/long/batch", json={"count": 60}, headers=tenant.issuer)
    assert issued.status_code == 201, issued.text
    await signed_in_csrf(client, tenant)
    first = await client.get("/admin/series/long")
    shown = re.findall(r'<code class="number">(L-\d+)</code>', first.text)
    assert shown == [f"L-{i:03}" for i in range(1, 51)]
    following = re.search(r'href="(/admin/series/long\?[^"]*cursor=[^"]+)">Next page', first.text)
    assert following, first.text
    second = await client.get(html.unescape(following.group(1)))
    shown = re.findall(r'<code class="number">(L-\d+)</code>', second.text)
    assert shown == [f"L-{i:03}" for i in range(51, 61)]
    assert "Next page" not in second.text and "First page" in second.text

    portal_csv = await client.get("/admin/series/long/ledger.csv", params={"period": "all"})
    api_csv = await client.get(
        "/series/long/numbers",
        params={"period": "all"},
        headers={**tenant.admin, "Accept": "text/csv"},
    )
    assert portal_csv.status_code == 200
    assert portal_csv.headers["content-type"].startswith("text/csv")
    assert 'filename="long-all-ledger.csv"' in portal_csv.headers["content-disposition"]
    assert portal_csv.text == api_csv.text
    assert len(portal_csv.text.splitlines()) == 61


async def test_a_gapless_series_page_offers_the_auditors_zip_of_the_period_shown(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "zipped", format="Z-{YYYY}-{seq}", reset="yearly")
    await create_series(client, tenant, "fast", mode="sequence", ledger=True)
    for date in ("2025-06-01", "2026-06-01"):
        issued = await client.post(
            "/series/zipped/batch", json={"count": 3, "date": date}, headers=tenant.issuer
        )
        assert issued.status_code == 201, issued.text
    await signed_in_csrf(client, tenant)
    page = await client.get("/admin/series/zipped", params={"period": "2025"})
    link = re.search(r'href="(/admin/series/zipped/audit\.zip\?[^"]*)" download', page.text)
    assert link, page.text
    bundle = await client.get(html.unescape(link.group(1)))
    assert bundle.status_code == 200, bundle.text
    assert 'filename="zipped-2025-audit.zip"' in bundle.headers["content-disposition"]
    api = await client.get("/series/zipped/export?period=2025", headers=tenant.admin)
    with (
        zipfile.ZipFile(io.BytesIO(bundle.content)) as portal_zip,
        zipfile.ZipFile(io.BytesIO(api.content)) as api_zip,
    ):
        assert portal_zip.read("ledger.csv") == api_zip.read("ledger.csv")
        assert portal_zip.read("chain.csv") == api_zip.read("chain.csv")
        assert b"Z-2025-3" in portal_zip.read("ledger.csv")
    assert "audit.zip" not in (await client.get("/admin/series/fast")).text


async def test_voiding_needs_a_reason_and_a_gapless_series(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "gl", format="G-{seq}")
    await create_series(client, tenant, "sq", format="S-{seq}", mode="sequence", ledger=True)
    await client.post("/series/gl/next", headers=tenant.issuer)
    await client.post("/series/sq/next", headers=tenant.issuer)
    token = await signed_in_csrf(client, tenant)
    confirm = await client.get("/admin/series/gl/void", params={"number": "G-1"})
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    empty = await client.post(
        "/admin/series/gl/void", data={"number": "G-1", "reason": " ", "csrf": token}
    )
    assert empty.status_code == 422 and 'id="error-reason"' in empty.text
    wrong_mode = await client.post(
        "/admin/series/sq/void", data={"number": "S-1", "reason": "x", "csrf": token}
    )
    assert wrong_mode.status_code == 409 and "Only numbers of a gapless series" in wrong_mode.text
    done = await client.post(
        "/admin/series/gl/void", data={"number": "G-1", "reason": "typo", "csrf": token}
    )
    assert done.headers["location"] == "/admin/series/gl?notice=voided&subject=G-1"
    again = await client.post(
        "/admin/series/gl/void", data={"number": "G-1", "reason": "typo", "csrf": token}
    )
    assert again.status_code == 409 and "already voided" in again.text
    ledger = (await client.get("/series/gl/numbers", headers=tenant.admin)).json()
    assert ledger["items"][0]["void_reason"] == "typo"
    voids = await client.get("/audit", params={"action": "number.voided"}, headers=tenant.admin)
    assert len(voids.json()["items"]) == 1


async def test_the_portal_voids_numbers_with_slashes_and_reserved_characters(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "sl", format="INV/{YYYY}/? #&+%é/{seq}")
    await client.post(
        "/series/sl/batch", json={"count": 2, "date": "2026-05-01"}, headers=tenant.issuer
    )
    number = "INV/2026/? #&+%é/1"
    token = await signed_in_csrf(client, tenant)
    page = await client.get("/admin/series/sl")
    links = re.findall(r'href="(/admin/series/sl/void\?number=[^"]+)"', page.text)
    confirm = await client.get(html.unescape(links[0]))
    assert confirm.status_code == 200, confirm.text
    assert f'name="number" value="{html.escape(number)}"' in confirm.text
    # Only a number of the ledger is offered for voiding: "INV/2026" is a prefix, not a number.
    unknown = await client.get("/admin/series/sl/void", params={"number": "INV/2026"})
    assert unknown.status_code == 404 and "No number" in unknown.text
    done = await client.post(
        "/admin/series/sl/void", data={"number": number, "reason": "typo", "csrf": token}
    )
    assert done.status_code == 303, done.text
    entry = await client.get(f"/series/sl/numbers/{quote(number, safe='')}", headers=tenant.admin)
    assert (entry.json()["status"], entry.json()["void_reason"]) == ("voided", "typo")


async def test_archiving_and_revoking_from_the_portal(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "old")
    token = await signed_in_csrf(client, tenant)
    archived = await client.post("/admin/series/old/archive", data={"csrf": token})
    assert archived.headers["location"] == "/admin/series/old?notice=archived"
    assert (await client.get("/series/old", headers=tenant.admin)).json()["archived"] is True
    assert 'href="/admin/series/old"' not in (await client.get("/admin/series")).text
    assert 'href="/admin/series/old"' in (await client.get("/admin/series?archived=true")).text

    created = await client.post(
        "/admin/keys", data={"name": "temp", "scope": "issue", "csrf": token}
    )
    assert created.status_code == 201
    key = re.search(r'id="new-key"[^>]* value="([^"]+)"', created.text)
    assert key, created.text
    prefix = prefix_of(key.group(1))
    revoked = await client.post(f"/admin/keys/{prefix}/revoke", data={"csrf": token})
    assert revoked.headers["location"] == f"/admin/keys?notice=revoked&subject={prefix}"
    refused = await client.get("/series", headers={"Authorization": f"Bearer {key.group(1)}"})
    assert refused.status_code == 401
    trail = await client.get("/audit", params={"limit": 3}, headers=tenant.admin)
    assert [r["action"] for r in trail.json()["items"]] == [
        "key.revoked",
        "key.created",
        "series.archived",
    ]


# --- counters, formats and the preview ------------------------------------------------------------


async def branch_series(client: httpx.AsyncClient, tenant: Tenant, name: str) -> None:
    """A gapless series with a counter per branch: BR07 issues twice, BR08 once."""
    await create_series(client, tenant, name, format="PO-{var:branch}-{seq:04}")
    for branch in ("BR07", "BR08", "BR07"):
        issued = await client.post(
            f"/series/{name}/next", json={"variables": {"branch": branch}}, headers=tenant.issuer
        )
        assert issued.status_code == 201, issued.text


async def dated_format(
    client: httpx.AsyncClient, tenant: Tenant, name: str, source: str, since: str
) -> dict[str, Any]:
    """Give the series a new format from the date ``since`` on, through the API."""
    changed = await client.patch(
        f"/series/{name}", json={"format": source, "effective_from": since}, headers=tenant.admin
    )
    assert changed.status_code == 200, changed.text
    result: dict[str, Any] = changed.json()
    return result


def section(page: httpx.Response, title_id: str) -> str:
    found = re.search(rf'aria-labelledby="{title_id}">(.*?)</section>', page.text, re.S)
    assert found, page.text
    return found.group(1)


def cells(html_text: str) -> list[list[str]]:
    """The text of each body row's cells."""
    body = html_text.partition("<tbody>")[2]
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


async def test_the_form_sets_a_shared_counter_locked_once_numbers_exist(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    token = await signed_in_csrf(client, tenant)
    created = await client.post(
        "/admin/series/_new",
        data={
            "name": "shared",
            "format": "S-{var:site}-{seq}",
            "shared_counter": "true",
            "csrf": token,
        },
    )
    assert created.status_code == 303, created.text
    assert (await client.get("/series/shared", headers=tenant.admin)).json()["shared_counter"]
    locked = re.compile(r'id="field-shared_counter"[^>]* disabled')
    assert not locked.search((await client.get("/admin/series/shared/edit")).text)
    await client.post(
        "/series/shared/next", json={"variables": {"site": "A"}}, headers=tenant.issuer
    )
    assert locked.search((await client.get("/admin/series/shared/edit")).text)


async def test_the_edit_form_dates_a_new_format(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create_series(client, tenant, "dated", format="D-{seq}")
    token = await signed_in_csrf(client, tenant)
    form = (await client.get("/admin/series/dated/edit")).text
    assert 'name="effective_from" type="date"' in form
    saved = await client.post(
        "/admin/series/dated/edit",
        data={"format": "D/{seq}", "effective_from": "2027-01-01", "csrf": token},
    )
    assert saved.status_code == 303, saved.text
    formats = (await client.get("/series/dated", headers=tenant.admin)).json()["formats"]
    assert [(f["format"], f["effective_from"]) for f in formats] == [
        ("D-{seq}", None),
        ("D/{seq}", "2027-01-01"),
    ]


async def test_a_format_that_could_render_an_earlier_number_is_refused_beside_the_field(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "f", format="F-1{seq}")
    await client.post("/series/f/next", headers=tenant.issuer)
    api = await client.patch("/series/f", json={"format": "F-{seq}"}, headers=tenant.admin)
    detail = assert_problem(api, 409, "format-conflict")["detail"]
    token = await signed_in_csrf(client, tenant)
    refused = await client.post("/admin/series/f/edit", data={"format": "F-{seq}", "csrf": token})
    assert refused.status_code == 409
    beside = re.search(r'<p class="field-error" id="error-format">([^<]*)</p>', refused.text)
    assert beside and html.unescape(beside.group(1)) == detail, refused.text
    assert 'value="F-{seq}"' in refused.text
    assert (await client.get("/series/f", headers=tenant.admin)).json()["format"] == "F-1{seq}"


async def test_the_series_page_lists_counters_and_filters_the_ledger_gaps_and_csv_by_one(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await branch_series(client, tenant, "po")
    await signed_in_csrf(client, tenant)
    page = await client.get("/admin/series/po")
    counters = section(page, "counters-title")
    assert [row[:3] for row in cells(counters)] == [
        ["all current", "branch=BR08", "1"],
        ["all current", "branch=BR07", "2"],
    ]
    # With two counters in the period and none chosen, no single gap report can be right.
    assert "has several counters" in section(page, "gaps-title")

    link = re.search(
        r'href="(/admin/series/po\?[^"]*)">Numbers<span class="sr-only"> of all, '
        r"branch=BR08<",
        counters,
    )
    assert link, counters
    chosen = await client.get(html.unescape(link.group(1)))
    assert re.findall(r'<code class="number">([^<]+)</code>', chosen.text) == ["PO-BR08-0001"]
    gaps = section(chosen, "gaps-title")
    assert "period all · branch=BR08" in gaps
    assert "No gaps: every value from 1 to 1 is in the ledger." in gaps
    download = re.search(r'href="(/admin/series/po/ledger.csv\?[^"]*)" download', chosen.text)
    assert download, chosen.text
    portal_csv = await client.get(html.unescape(download.group(1)))
    api_csv = await client.get(
        "/series/po/numbers",
        params={"period": "all", "variables": "branch=BR08"},
        headers={**tenant.admin, "Accept": "text/csv"},
    )
    assert portal_csv.status_code == 200, portal_csv.text
    assert portal_csv.text == api_csv.text
    assert [row["number"] for row in csv.DictReader(io.StringIO(portal_csv.text))] == [
        "PO-BR08-0001"
    ]
    filtered = await client.get(
        "/admin/series/po", params={"variables": "branch=BR07", "status": "issued"}
    )
    shown = re.findall(r'<code class="number">([^<]+)</code>', filtered.text)
    assert shown == ["PO-BR07-0001", "PO-BR07-0002"]
    assert '<option value="branch=BR07" selected>' in filtered.text
    assert "No gaps: every value from 1 to 2" in section(filtered, "gaps-title")
    # Text that is no counter's variables filters nothing, as an unknown period does.
    unfiltered = await client.get("/admin/series/po", params={"variables": "branch BR07"})
    assert len(re.findall(r'<code class="number">', unfiltered.text)) == 3


async def test_the_series_page_shows_the_format_history(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "fh", format="FH-{seq}")
    changed = await dated_format(client, tenant, "fh", "FH/{seq}", "2026-01-01")
    await signed_in_csrf(client, tenant)
    history = section(await client.get("/admin/series/fh"), "formats-title")
    rows = cells(history)
    assert [row[:2] for row in rows] == [
        ["FH/{seq} in force today", "2026-01-01"],
        ["FH-{seq}", "every date"],
    ]
    set_at = [f["set_at"] for f in reversed(changed["formats"])]
    assert [row[2] for row in rows] == [
        datetime.datetime.fromisoformat(at).strftime("%Y-%m-%d %H:%M UTC") for at in set_at
    ]


async def test_the_preview_gives_a_new_formats_verdict_before_saving(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "v", format="V-1{seq}")
    await signed_in_csrf(client, tenant)
    api = await client.patch("/series/v", json={"format": "V-{seq}"}, headers=tenant.admin)
    refused = await client.get("/admin/preview", params={"series": "v", "format": "V-{seq}"})
    assert refused.json()["errors"] == {"format": api.json()["detail"]}
    accepted = await client.get("/admin/preview", params={"series": "v", "format": "V/{seq}"})
    assert accepted.json()["errors"] == {}
    assert accepted.json()["verdict"].startswith("Accepted")
    unchanged = await client.get("/admin/preview", params={"series": "v", "format": "V-1{seq}"})
    assert unchanged.json()["verdict"] is None


async def test_the_preview_samples_the_counter_and_the_format_of_its_date(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await branch_series(client, tenant, "pd")
    await dated_format(client, tenant, "pd", "PO/{var:branch}/{seq:04}", "2026-01-01")
    await signed_in_csrf(client, tenant)

    async def sample(**params: str) -> dict[str, Any]:
        shown = await client.get("/admin/preview", params={"series": "pd", **params})
        assert shown.json()["errors"] == {}, shown.json()
        last: dict[str, Any] = shown.json()["samples"][-1]
        return last

    current = "PO/{var:branch}/{seq:04}"
    before = await sample(format=current, variables="branch=BR07", date="2025-06-01")
    assert (before["format"], before["number"]) == ("PO-{var:branch}-{seq:04}", "PO-BR07-0003")
    assert before["variables"] == {"branch": "BR07"}
    after = await sample(format=current, variables="branch=BR07", date="2026-06-01")
    assert (after["format"], after["number"]) == (current, "PO/BR07/0003")
    other = await sample(format=current, variables="branch=BR08", date="2026-06-01")
    assert other["number"] == "PO/BR08/0002"
    # A format being typed, dated from a day on, renders the dates it would cover.
    typed = {"format": "PO:{var:branch}:{seq:04}", "effective_from": "2030-01-01"}
    covered = await sample(**typed, variables="branch=BR07", date="2031-01-01")
    assert covered["number"] == "PO:BR07:0003"
    earlier = await sample(**typed, variables="branch=BR07", date="2029-01-01")
    assert earlier["number"] == "PO/BR07/0003"


async def test_the_series_list_counts_the_counters_of_a_period_kept_per_variables(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await branch_series(client, tenant, "branches")
    await create_series(client, tenant, "plain", format="P-{seq}")
    await client.post("/series/plain/batch", json={"count": 3}, headers=tenant.issuer)
    await signed_in_csrf(client, tenant)
    rows = {row[0].split()[0]: row for row in cells((await client.get("/admin/series")).text)}
    assert rows["branches"][4].split() == ["2", "counters", "all"]
    assert rows["plain"][4].split() == ["3", "all"]


async def test_the_form_sets_the_series_rules_and_reopening_needs_a_reason(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    token = await signed_in_csrf(client, tenant)
    created = await client.post(
        "/admin/series/_new",
        data={
            "name": "gst",
            "format": "INV/{FY:YY-YY}/{seq:05}",
            "reset": "yearly",
            "fiscal_year_start": "4",
            "max_value": "99999",
            "date_order": "strict",
            "closed_through": "2025-03-31",
            "number_profile": "in-gst",
            "max_length": "",
            "allowed_characters": "",
            "warn_remaining": "100",
            "csrf": token,
        },
    )
    assert created.status_code == 303, created.text
    series = (await client.get("/series/gst", headers=tenant.admin)).json()
    assert (series["date_order"], series["closed_through"]) == ("strict", "2025-03-31")
    assert (series["number_profile"], series["max_length"]) == ("in-gst", None)
    assert series["warn_remaining"] == 100
    page = (await client.get("/admin/series/gst")).text
    assert "in-gst at most 16 characters" in re.sub(r"\s+", " ", page)

    edit = {"format": "INV/{FY:YY-YY}/{seq:05}", "csrf": token}
    back = await client.post("/admin/series/gst/edit", data={**edit, "closed_through": ""})
    assert back.status_code == 422
    assert 'id="error-closed_through"' in back.text and "reopen_reason" in back.text
    reopened = await client.post(
        "/admin/series/gst/edit",
        data={**edit, "closed_through": "", "reopen_reason": "late supplier invoice"},
    )
    assert reopened.status_code == 303, reopened.text
    assert (await client.get("/series/gst", headers=tenant.admin)).json()["closed_through"] is None
    too_long = await client.post(
        "/admin/series/gst/edit", data={**edit, "format": "INVOICE/{FY:YY-YY}/{seq:05}"}
    )
    assert too_long.status_code == 422 and 'id="error-format"' in too_long.text


async def test_a_counter_running_low_has_a_badge_on_the_series_and_the_list(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "low", max_value=10, warn_remaining=3)
    await signed_in_csrf(client, tenant)
    await client.post("/series/low/batch", json={"count": 7}, headers=tenant.issuer)
    assert "left</span>" not in (await client.get("/admin/series/low")).text
    assert "running low" not in (await client.get("/admin/series")).text
    await client.post("/series/low/next", headers=tenant.issuer)
    assert (
        '<span class="badge badge-danger">2 left</span>'
        in (await client.get("/admin/series/low")).text
    )
    assert "running low" in (await client.get("/admin/series")).text


async def test_a_reserved_number_is_shown_and_found_as_reserved(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await create_series(client, tenant, "held", format="H-{seq}")
    await client.post("/series/held/next", headers=tenant.issuer)
    reserved = await client.post("/series/held/reservations", headers=tenant.issuer)
    assert reserved.status_code == 201, reserved.text
    await signed_in_csrf(client, tenant)
    page = await client.get("/admin/series/held")
    assert page.status_code == 200
    assert 'class="badge badge-info">reserved</span>' in page.text
    only = await client.get("/admin/series/held", params={"status": "reserved"})
    assert "H-2" in only.text and "H-1" not in only.text
