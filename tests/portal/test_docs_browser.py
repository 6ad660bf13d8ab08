"""The API documentation works in a browser with no internet: Swagger UI issues a number, ReDoc
renders, and neither page asks for anything but the service itself."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from harness.processes import ServiceProcess, start_service
from harness.tenants import Tenant, create_series

LOCAL_HOSTS = {"127.0.0.1"}
TIMEOUT_MS = 20_000


@pytest.fixture
def service(database_url: str, service_dir: Path) -> Any:
    started = start_service(database_url, service_dir)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def offline_page(browser: Any) -> AsyncIterator[tuple[Any, list[str]]]:
    """A page that may load only from 127.0.0.1; anything else is refused and recorded."""
    context = await browser.new_context()
    outside: list[str] = []

    async def only_local(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOCAL_HOSTS or url.startswith(("data:", "blob:")):
            await route.continue_()
        else:
            outside.append(url)
            await route.abort()

    await context.route("**/*", only_local)
    try:
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page, outside
    finally:
        await context.close()


@pytest.mark.browser
async def test_swagger_ui_issues_a_number_with_an_api_key(
    service: ServiceProcess, tenant: Tenant, offline_page: tuple[Any, list[str]]
) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        await create_series(client, tenant, "browsed", format="WEB-{seq:04}")
    page, outside = offline_page

    await page.goto(f"{service.url}/docs")
    await page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".dialog-ux")
    await dialog.locator("input").first.fill(tenant.admin_key)
    await dialog.locator(".auth-btn-wrapper button[type=submit]").click()
    await dialog.get_by_role("button", name="Close").click()

    operation = page.locator(".opblock-post", has=page.locator('[data-path="/series/{name}/next"]'))
    await operation.locator(".opblock-summary").click()
    await operation.get_by_role("button", name="Try it out").click()
    await operation.locator('input[placeholder="name"]').fill("browsed")
    await operation.get_by_role("button", name="Execute").click()

    response = operation.locator(".live-responses-table .response")
    await response.locator(".response-col_status").get_by_text("201").wait_for()
    body = await response.locator(".response-col_description pre").first.inner_text()
    assert '"number": "WEB-0001"' in body, body
    assert outside == []


@pytest.mark.browser
async def test_redoc_renders_the_reference_offline(
    service: ServiceProcess, offline_page: tuple[Any, list[str]]
) -> None:
    page, outside = offline_page
    await page.goto(f"{service.url}/redoc")
    await page.get_by_role("heading", name="Issue the next number").wait_for()
    assert outside == []


async def test_doc_pages_reference_only_this_service(service: ServiceProcess) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        for path in ("/docs", "/redoc"):
            page = await client.get(path)
            assert page.status_code == 200
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert "http://" not in page.text and "https://" not in page.text, page.text
            assert "/docs-assets/favicon.png" in page.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            assert (await client.get(f"/docs-assets/{asset}")).status_code == 200


def has_example(schema: dict[str, Any] | None, schemas: dict[str, Any]) -> bool:
    """The schema, or everything it is built from, carries an example Swagger UI can show."""
    if not schema:
        return False
    if "examples" in schema or "example" in schema:
        return True
    if "$ref" in schema:
        return has_example(schemas[schema["$ref"].rsplit("/", 1)[-1]], schemas)
    if "anyOf" in schema:
        return any(has_example(branch, schemas) for branch in schema["anyOf"])
    if schema.get("type") == "array":
        return has_example(schema.get("items"), schemas)
    properties = schema.get("properties", {}).values()
    return bool(properties) and all(has_example(p, schemas) or "default" in p for p in properties)


async def test_every_operation_has_a_summary_and_examples(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    lacking = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            if not operation.get("summary"):
                lacking.append(f"{where}: summary")
            contents = {"request": operation.get("requestBody", {}).get("content", {})}
            for status, response in operation["responses"].items():
                if status.startswith("2"):
                    contents[status] = response.get("content", {})
            for part, content in contents.items():
                for media_type, media in content.items():
                    if not ("example" in media or has_example(media.get("schema"), schemas)):
                        lacking.append(f"{where}: {part} {media_type} example")
    assert lacking == []
