"""Helpers shared by the tests: tenants, series, and real service processes."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous fixture code, on a loop of its own."""
    return asyncio.new_event_loop().run_until_complete(coroutine)


@dataclass(frozen=True)
class Tenant:
    name: str
    id: int
    admin_key: str
    issue_key: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    @property
    def issuer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issue_key}"}


async def create_series(
    client: httpx.AsyncClient, tenant: Tenant, name: str, **fields: Any
) -> dict[str, Any]:
    body = {"name": name, "format": fields.pop("format", "T-{seq}"), **fields}
    response = await client.post("/series", json=body, headers=tenant.admin)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServiceProcess:
    """A real ``docnum serve`` process listening on a loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_service(
    database_url: str, log_dir: Path, *, workers: int = 1, env: dict[str, str] | None = None
) -> ServiceProcess:
    port = free_port()
    log = log_dir / f"docnum-{port}.log"
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DOCNUM_DEMO": "false",
        "DOCNUM_DATA_DIR": str(log_dir),
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    service = ServiceProcess(process, port, log)
    wait_until_ready(service)
    return service


def wait_until_ready(service: ServiceProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"docnum serve exited:\n{service.log.read_text()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    service.stop()
    raise RuntimeError(f"docnum serve did not become ready:\n{service.log.read_text()}")


@contextmanager
def services(
    database_url: str, log_dir: Path, count: int, **options: Any
) -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    try:
        for _ in range(count):
            started.append(start_service(database_url, log_dir, **options))
        yield started
    finally:
        for service in started:
            service.stop()
