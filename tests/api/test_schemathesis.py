"""Schemathesis against a real ``docnum serve``: whatever it generates from /openapi.json, valid or
not, gets no 5xx, and every answer (status, media type, headers, body) is the one documented."""

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx

from harness.processes import services
from harness.tenants import Tenant

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
)
# Enough to reach every branch the schema describes while keeping the run near half a minute.
MAX_EXAMPLES = 15
# The checks are chosen in the configuration, not with --checks, so that one operation can turn
# them off: a path ending in /void also names a number ending in /void, which GET looks up and
# PATCH annotates, so a 405 there rightly allows GET, and PATCH gets no 405 at all, methods the
# void operation alone does not document.
# Keep the run's own admin key alive (it could otherwise revoke itself through a listed prefix),
# and let archiving hit a series of its own, so the others keep issuing numbers.
CONFIG = (
    "[checks]\nenabled = false\n"
    + "".join(f"{check}.enabled = true\n" for check in CHECKS)
    + """
[[operations]]
include-path = "/keys/{prefix}"
include-method = "DELETE"
parameters = { "path.prefix" = "0000abcd" }

[[operations]]
include-path = "/series/{name}"
include-method = "DELETE"
parameters = { "path.name" = "scratch" }

[[operations]]
include-path = "/series/{name}/numbers/{number}/void"
checks.allow_header_conformance.enabled = false
checks.unsupported_method.enabled = false
"""
)


async def seed(http: httpx.AsyncClient, tenant: Tenant) -> None:
    """Series named in the schema's examples, so those examples reach real data."""
    for body in (
        {"name": "invoice", "format": "INV-{YYYY}-{seq:06}", "reset": "yearly"},
        {"name": "scratch", "format": "X-{seq}", "mode": "sequence"},
    ):
        made = await http.post("/series", json=body, headers=tenant.admin)
        assert made.status_code == 201, made.text
    # INV-2026-000123, the example number of the void operation, exists.
    issued = await http.post(
        "/series/invoice/batch", json={"count": 123, "date": "2026-06-01"}, headers=tenant.admin
    )
    assert issued.status_code == 201, issued.text


async def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    database_url: str, service_dir: Path, tmp_path: Path, tenant: Tenant
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    with services(database_url, service_dir, 1) as (service,):
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            await seed(http, tenant)
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "--no-color",
            "--config-file",
            str(config),
            "run",
            f"{service.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {tenant.admin_key}",
            "--max-examples",
            str(MAX_EXAMPLES),
            # One worker: Python 3.11 can fail parsing lambdas in several threads at once.
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ]
        result = await asyncio.to_thread(
            subprocess.run,
            command,
            cwd=tmp_path,  # where schemathesis keeps its cache
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
