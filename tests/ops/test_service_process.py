"""The real ``docnum serve`` process: it answers over a socket, stops cleanly, and what it stored
survives a restart (with the embedded PostgreSQL too)."""

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app import demo
from harness.database import run_async
from harness.processes import DATABASE_VARIABLES, ServiceProcess, free_port, start_service
from harness.tenants import Tenant
from tests.support.api import assert_problem


def oversized_chunks() -> Iterator[bytes]:
    yield b'{"name": "big", "format": "B-{seq}", "description": "'
    for _ in range(64):
        yield b"x" * 4096
    yield b'"}'


def test_serve_answers_over_a_socket(database_url: str, service_dir: Path, tenant: Tenant) -> None:
    service = start_service(database_url, service_dir)
    try:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            assert http.get("/readyz").json() == {"status": "ready"}
            created = http.post(
                "/series", json={"name": "socket", "format": "S-{seq:03}"}, headers=tenant.admin
            )
            assert created.status_code == 201, created.text
            issued = http.post("/series/socket/next", headers=tenant.issuer)
            assert issued.status_code == 201, issued.text
            assert issued.json()["number"] == "S-001"
            missing = http.get("/series/nothing", headers=tenant.admin)
            assert_problem(missing, 404, "series-not-found")
            assert_problem(http.get("/no/such/route"), 404, "not-found")
            # A body without a declared length is cut off at the limit all the same.
            too_large = http.post(
                "/series",
                content=oversized_chunks(),
                headers={**tenant.admin, "Content-Type": "application/json"},
            )
            assert too_large.request.headers["transfer-encoding"] == "chunked"
            assert_problem(too_large, 413, "payload-too-large")
    finally:
        service.stop()
    assert service.process.returncode == 0, service.log.read_text()


def test_the_demo_key_is_announced_on_standard_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo.announce("dn_0123abcd_secret", tmp_path / "data", "http://127.0.0.1:9999")
    out = capsys.readouterr()
    assert out.out == ""
    assert "dn_0123abcd_secret" in out.err
    assert (
        'curl -X POST http://127.0.0.1:9999/series/invoice/next -H "Authorization: Bearer '
        'dn_0123abcd_secret"' in out.err
    )
    key_file = tmp_path / "data" / demo.KEY_FILE
    assert key_file.read_text() == "dn_0123abcd_secret\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_serve_refuses_a_weak_session_secret_before_it_starts(tmp_path: Path) -> None:
    weak = "changeme-changeme-changeme-changeme"
    environment = {
        **{k: v for k, v in os.environ.items() if k not in DATABASE_VARIABLES},
        # Nothing listens there: a service that ignored the secret would fail on the database.
        "DATABASE_URL": "postgresql://docnum@127.0.0.1:1/docnum",
        "DOCNUM_DATA_DIR": str(tmp_path),
        "DOCNUM_SESSION_SECRET": weak,
    }
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "DOCNUM_SESSION_SECRET is too weak" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert weak not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("docnum.example", False),
    ],
)
def test_unless_set_the_demo_is_made_only_on_a_loopback_address(host: str, loopback: bool) -> None:
    assert demo.wanted(None, host) is loopback
    assert demo.wanted(True, host) is True
    assert demo.wanted(False, host) is False


def test_listening_on_the_network_the_demo_prints_no_key_unless_asked_for(
    empty_database_url: str, tmp_path: Path
) -> None:
    network: dict[str, str | None] = {"DOCNUM_HOST": "0.0.0.0", "DOCNUM_DEMO": None}
    unasked = start_service(empty_database_url, tmp_path, env=network)
    unasked.stop()
    log = unasked.log.read_text()
    assert "no demo on 0.0.0.0" in log and "docnum keys create" in log
    assert "dn_" not in log
    assert not (tmp_path / demo.KEY_FILE).exists()
    assert run_async(tenants(empty_database_url)) == 0

    asked = start_service(empty_database_url, tmp_path, env={**network, "DOCNUM_DEMO": "true"})
    try:
        key = (tmp_path / demo.KEY_FILE).read_text().strip()
        assert key in asked.log.read_text()
        issued = httpx.post(
            f"{asked.url}/series/invoice/next", headers={"Authorization": f"Bearer {key}"}
        )
        assert issued.status_code == 201, issued.text
    finally:
        asked.stop()


async def tenants(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM tenants")
        return count
    finally:
        await conn.close()


def embedded(data_dir: Path, log_dir: Path) -> ServiceProcess:
    return start_service(
        None, log_dir, env={"DOCNUM_DATA_DIR": str(data_dir), "DOCNUM_DEMO": "true"}
    )


def test_series_survive_a_restart_on_the_embedded_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = embedded(data_dir, tmp_path)
    try:
        key_file = data_dir / demo.KEY_FILE
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        log = first.log.read_text()
        assert key in log
        assert f"curl -X POST {first.url}/series/invoice/next" in log
        admin = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=first.url, timeout=10, headers=admin) as http:
            created = http.post("/series", json={"name": "kept", "format": "K-{seq}"})
            assert created.status_code == 201, created.text
            assert http.post("/series/kept/next").json()["value"] == 1
            assert http.post("/series/invoice/next").status_code == 201
    finally:
        first.stop()
    assert first.process.returncode == 0, first.log.read_text()
    # The embedded server stopped with the service: what follows was read back from disk.
    assert not (data_dir / "postgres" / "postmaster.pid").exists()

    second = embedded(data_dir, tmp_path)
    try:
        log = second.log.read_text()
        assert key not in log
        assert f"the demo admin key is in {key_file}" in log
        assert key_file.read_text().strip() == key
        with httpx.Client(base_url=second.url, timeout=10, headers=admin) as http:
            listed = http.get("/series").json()["items"]
            assert [s["name"] for s in listed] == ["invoice", "kept"]
            assert http.post("/series/kept/next").json()["value"] == 2
            invoice = http.post("/series/invoice/next").json()["number"]
            assert re.fullmatch(r"INV-\d{4}-000002", invoice), invoice
    finally:
        second.stop()
    assert second.process.returncode == 0, second.log.read_text()
