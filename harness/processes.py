"""Real ``docnum serve`` processes on loopback ports."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


DATABASE_VARIABLES = ("DATABASE_URL", "DOCNUM_DATABASE_URL")


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
    database_url: str | None,
    log_dir: Path,
    *,
    workers: int = 1,
    env: Mapping[str, str | None] | None = None,
    output: int | None = None,
) -> ServiceProcess:
    """Start ``docnum serve``; with no database_url it runs its own embedded PostgreSQL. Its
    standard output and error go to ``log``, or to the file descriptor ``output`` when given.
    A variable that ``env`` sets to None is left unset."""
    port = free_port()
    log = log_dir / f"docnum-{port}.log"
    chosen = {
        **{k: v for k, v in os.environ.items() if k not in DATABASE_VARIABLES},
        **({"DATABASE_URL": database_url} if database_url else {}),
        "DOCNUM_DEMO": "false",
        "DOCNUM_DATA_DIR": str(log_dir),
        **(env or {}),
    }
    environment = {name: value for name, value in chosen.items() if value is not None}
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
            stdout=out if output is None else output,
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


# Multi-process tests share one PostgreSQL with the rest of the suite: a few connections per
# process are plenty on two cores and leave room for the others.
SMALL_POOL = {"DOCNUM_POOL_MAX_SIZE": "4"}
# For tests that prove what is issued, not how fast, and whose clients do not retry a 503: the
# deadlines have tests of their own, and a slow moment of a shared 2-core machine must not turn
# a slow answer into a 503.
PATIENT = {"DOCNUM_POOL_TIMEOUT_MS": "10000", "DOCNUM_DATABASE_TIMEOUT_MS": "30000"}


@asynccontextmanager
async def services_side_by_side(
    database_url: str, log_dir: Path, count: int, **options: Any
) -> AsyncIterator[list[ServiceProcess]]:
    """Like ``services``, but started at the same time; processes a test appends to the list are
    stopped too."""
    results = await asyncio.gather(
        *(asyncio.to_thread(start_service, database_url, log_dir, **options) for _ in range(count)),
        return_exceptions=True,
    )
    started = [r for r in results if isinstance(r, ServiceProcess)]
    try:
        for result in results:
            if isinstance(result, BaseException):
                raise result
        yield started
    finally:
        for service in started:
            service.stop()
