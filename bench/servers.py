"""The processes under test: Docnum, the reference app, and PostgreSQL, with what they consume.

Both HTTP servers run the way a deployment would: a separate process tree on a loopback port,
uvicorn with the given number of workers. Memory is the RSS summed over the tree (supervisor and
workers); CPU is counted per process so a run can be read as "which side was busy".
"""

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.processes import ServiceProcess, free_port, start_service, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    """One HTTP server under test, and the process tree it runs as."""

    name: str
    workers: int
    service: ServiceProcess

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def pid(self) -> int:
        return self.service.process.pid

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def worker_processes(self) -> list[psutil.Process]:
        """The processes that serve requests: the root alone, or uvicorn's spawned workers."""
        if self.workers == 1:
            return [psutil.Process(self.pid)]
        return [p for p in self.tree()[1:] if "spawn_main" in " ".join(_cmdline(p))]

    def rss(self) -> int:
        return sum(_rss(p) for p in self.tree())

    def worker_rss(self) -> list[int]:
        return [_rss(p) for p in self.worker_processes()]

    def stop(self) -> None:
        self.service.stop()


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return [str(part) for part in process.cmdline()]
    except psutil.Error:
        return []


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    """User + system CPU time of each process, by pid (processes that are gone are left out)."""
    seconds: dict[int, float] = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots; a process born in between counts from zero."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def postgres_processes(postmaster_pid: int) -> list[psutil.Process]:
    root = psutil.Process(postmaster_pid)
    return [root, *root.children(recursive=True)]


def client_backends(postmaster_pid: int, user: str = "postgres") -> list[psutil.Process]:
    """The backends serving clients, without autovacuum, checkpointer and the other workers."""
    prefix = f"postgres: {user} "
    return [
        p for p in postgres_processes(postmaster_pid) if " ".join(_cmdline(p)).startswith(prefix)
    ]


def _environment(database_url: str, out: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "DOCNUM_DEMO": "false",
        "DOCNUM_DATA_DIR": str(out),
    }


@contextmanager
def docnum(
    database_url: str, out: Path, workers: int, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``docnum serve`` with ``workers`` workers on a free loopback port, with the settings a user
    gets out of the box (its request log included) unless ``env`` changes some."""
    environment = {**_environment(database_url, out), **(env or {})}
    service = start_service(database_url, out, workers=workers, env=environment)
    server = Server("docnum", workers, service)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def _serving(
    name: str, workers: int, out: Path, command: list[str], env: dict[str, str]
) -> Iterator[Server]:
    """Run ``command`` from the project's root until the block ends, ``{port}`` in its arguments
    replaced by a free loopback port; it is ready once its /readyz answers."""
    port = free_port()
    log = out / f"{name}-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [part.format(port=port) for part in command],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    service = ServiceProcess(process, port, log)
    wait_until_ready(service)
    server = Server(name, workers, service)
    try:
        yield server
    finally:
        server.stop()


def reference(
    database_url: str, out: Path, workers: int
) -> "contextlib.AbstractContextManager[Server]":
    """The reference app under uvicorn, with the options ``docnum serve`` gives uvicorn."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.reference_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    env = {**os.environ, **_environment(database_url, out)}
    return _serving("reference", workers, out, command, env)


# The peers: the forum's Django project under gunicorn with 4 sync workers, as it would be deployed.
PEER_WORKERS = 4
PEER_SETTINGS = "bench.peers.settings"


def peer_environment(database_url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": PEER_SETTINGS}


def peers(database_url: str, out: Path) -> "contextlib.AbstractContextManager[Server]":
    """gunicorn serving bench.peers with ``PEER_WORKERS`` sync workers on a free loopback port."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(PEER_WORKERS),
        "--worker-class",
        "sync",
        "--bind",
        "127.0.0.1:{port}",
        "--log-level",
        "warning",
        "bench.peers.wsgi:application",
    ]
    return _serving("peers", PEER_WORKERS, out, command, peer_environment(database_url))
