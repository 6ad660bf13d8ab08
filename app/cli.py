"""The ``docnum`` command: serve, migrate, manage API keys, print the OpenAPI document."""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import asyncpg
import uvicorn
from pydantic import ValidationError
from uvicorn.config import STARTUP_FAILURE

from app import demo, keys, logs
from app.auth import SCOPES
from app.database import Connection, database_url, direct_url
from app.main import create_app
from app.migrate import MigrationError, migrate
from app.problems import KeyNotFound, TenantNotFound
from app.services import STOP_SECONDS
from app.settings import Settings, get_settings

T = TypeVar("T")
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CLI_ACTOR = "command line"


def _with_connection(url: str, work: Callable[[Connection], Awaitable[T]]) -> T:
    """Run ``work`` on one connection to ``url`` (a direct one: migrations need a session)."""

    async def run() -> T:
        try:
            conn = await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError) as error:
            sys.exit(f"docnum: cannot connect to the database: {error}")
        try:
            await migrate(conn)
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


class _StoppingServer(uvicorn.Server):
    """uvicorn's server, whose stop is bounded.

    On SIGTERM it stops accepting at once and lets the requests in flight finish (each gets its
    answer, or a 503, within ``pool_timeout_ms + database_timeout_ms``); those still running
    ``STOP_SECONDS`` before the end of ``shutdown_grace_seconds`` are cut off with a 503, never
    answered as issued. The lifespan then gives back the unused cached values if the database
    answers in time, and the process exits. A second SIGTERM or SIGINT exits at once.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            os._exit(128 + sig)
        super().handle_exit(sig, frame)


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """The directory where the workers keep their metrics for every scrape to add up
    (prometheus_client's multiprocess mode, see app.metrics): ``PROMETHEUS_MULTIPROC_DIR`` when
    set, emptied of an earlier run's files, else a new one that is removed at exit."""
    given = os.environ.get(MULTIPROCESS_VARIABLE)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        yield
        return
    with tempfile.TemporaryDirectory(prefix="docnum-metrics-") as directory:
        os.environ[MULTIPROCESS_VARIABLE] = directory  # the workers inherit it
        yield


def serve(settings: Settings, args: argparse.Namespace) -> None:
    logs.configure(settings)
    # uvicorn stops gracefully on SIGTERM and then raises it again; exiting 0 at that point (or
    # on a SIGTERM before uvicorn starts) tells supervisors the stop they asked for went well.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    url = database_url(settings)
    # Workers inherit the resolved database, so only this process owns an embedded server.
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()

    async def prepare(conn: Connection) -> str | None:
        return await demo.prepare(conn, settings.demo, host)

    demo.announce(
        _with_connection(direct_url(settings, url), prepare),
        settings.data_dir,
        f"http://{host}:{port}",
    )
    options: dict[str, Any] = {
        "app": "app.main:create_app",
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "log_level": settings.log_level,
        "log_config": None,  # app.logs formats every line, uvicorn's included
        "access_log": False,
        # The grace period covers the whole stop: requests in flight, then the lifespan's end.
        "timeout_graceful_shutdown": max(settings.shutdown_grace_seconds - STOP_SECONDS, 0.1),
    }
    if workers > 1:  # each worker stops as uvicorn's own server does, within the same grace
        with _shared_metrics():
            uvicorn.run(**options)
        return
    server = _StoppingServer(uvicorn.Config(**options))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def migrate_command(settings: Settings, _args: argparse.Namespace) -> None:
    async def report(_conn: Connection) -> None:
        return None

    _with_connection(direct_url(settings, database_url(settings)), report)
    print("migrations are up to date", file=sys.stderr)


def openapi_command(settings: Settings, _args: argparse.Namespace) -> None:
    """Print the document ``GET /openapi.json`` serves, for client generators; starts nothing
    (no database, no server)."""
    print(json.dumps(create_app(settings).openapi(), indent=2))


def keys_command(settings: Settings, args: argparse.Namespace) -> None:
    url = direct_url(settings, database_url(settings))

    async def create(conn: Connection) -> None:
        tenant = await keys.ensure_tenant(conn, args.tenant)
        made = await keys.create(conn, tenant, args.scope, args.name, actor=CLI_ACTOR)
        print(f"created {made.scope} key {made.prefix} for tenant {args.tenant}", file=sys.stderr)
        print(made.key)

    async def listing(conn: Connection) -> None:
        tenant = await keys.tenant_id(conn, args.tenant)
        for key in await keys.listing(conn, tenant, include_revoked=True):
            state = "revoked" if key.revoked_at else "active"
            used = key.last_used_at.isoformat() if key.last_used_at else "never"
            print(f"{key.prefix}\t{key.scope}\t{state}\t{key.name}\tlast used {used}")

    async def revoke(conn: Connection) -> None:
        tenant = await keys.tenant_id(conn, args.tenant)
        await keys.revoke(conn, tenant, args.prefix, actor=CLI_ACTOR)
        print(f"revoked {args.prefix}", file=sys.stderr)

    _with_connection(url, {"create": create, "list": listing, "revoke": revoke}[args.action])


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="docnum", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run the HTTP service")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--workers", type=int)
    run.set_defaults(handler=serve)

    commands.add_parser("migrate", help="apply database migrations").set_defaults(
        handler=migrate_command
    )

    commands.add_parser(
        "openapi", help="print the OpenAPI document, as GET /openapi.json serves it"
    ).set_defaults(handler=openapi_command)

    key = commands.add_parser("keys", help="manage API keys")
    actions = key.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key; prints the key alone on stdout")
    create.add_argument("--tenant", required=True)
    create.add_argument("--scope", choices=SCOPES, required=True)
    create.add_argument("--name", default="", type=keys.key_name)
    listing = actions.add_parser("list", help="list a tenant's keys")
    listing.add_argument("--tenant", required=True)
    revoke = actions.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("--tenant", required=True)
    revoke.add_argument("prefix")
    key.set_defaults(handler=keys_command)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as error:
        # What is wrong with each setting, never the values (a setting may be a secret).
        wrong = (f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        sys.exit("docnum: invalid settings:\n  " + "\n  ".join(wrong))
    try:
        args.handler(settings, args)
    except (KeyNotFound, TenantNotFound, MigrationError) as error:
        sys.exit(f"docnum: {error}")


if __name__ == "__main__":
    main()
