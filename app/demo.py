"""First start: a demo tenant, an admin key and a series, so a newcomer can issue at once.

The demo prints its admin key, so by default it is made only for a service that listens on a
loopback address (``make run``): one that listens on the network (``0.0.0.0`` in a container)
never writes an admin key into its logs unless ``DOCNUM_DEMO=true`` asks for it.
"""

import ipaddress
import os
import sys
from pathlib import Path

from app import keys
from app import series as series_sql
from app.database import Connection
from app.schemas import SeriesCreate

DEMO_TENANT = "demo"
KEY_FILE = "admin-key.txt"
ACTOR = "first start"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wanted(setting: bool | None, host: str) -> bool:
    """Whether to make the demo: as ``DOCNUM_DEMO`` says, or, when it is unset, only on a
    loopback address."""
    return is_loopback(host) if setting is None else setting


async def prepare(conn: Connection, setting: bool | None, host: str) -> str | None:
    """At start: the new demo admin key when the demo is wanted and the database is empty;
    otherwise None, saying why there is no demo when it was left out for the address."""
    if wanted(setting, host):
        return await bootstrap(conn)
    if setting is None and not await conn.fetchval(keys.COUNT_TENANTS):
        print(
            f"Docnum: no demo on {host}, which is not a loopback address, so that no admin key "
            "is printed; create the first key with `docnum keys create --tenant NAME --scope "
            "admin`, or set DOCNUM_DEMO=true to make the demo anyway.",
            file=sys.stderr,
        )
    return None


async def bootstrap(conn: Connection) -> str | None:
    """On an empty database, create the demo and return its admin key; otherwise None."""
    if await conn.fetchval(keys.COUNT_TENANTS):
        return None
    tenant = await keys.ensure_tenant(conn, DEMO_TENANT)
    created = await keys.create(conn, tenant, "admin", "demo admin", actor=ACTOR)
    demo_series = SeriesCreate(
        name="invoice",
        format="INV-{YYYY}-{seq:06}",
        reset="yearly",
        description="Demo invoice numbers",
    )
    await series_sql.create(conn, tenant, demo_series, actor=ACTOR)
    return created.key


def announce(key: str | None, data_dir: Path, base_url: str) -> None:
    """Save a new demo key where only this user can read it, and say how to use it."""
    key_file = data_dir / KEY_FILE
    if key is None:
        if key_file.exists():
            print(f"Docnum: the demo admin key is in {key_file}", file=sys.stderr)
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    print(
        f"""
Docnum: created tenant '{DEMO_TENANT}' with series 'invoice' and this admin key
(saved in {key_file}, readable only by you):

    {key}

Issue a number:

    curl -X POST {base_url}/series/invoice/next -H "Authorization: Bearer {key}"

API docs: {base_url}/docs    Admin portal: {base_url}/admin
""",
        file=sys.stderr,
    )
