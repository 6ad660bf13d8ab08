"""API keys: made random, shown once, kept only as a hash, listed without secrets, and revoked
through the API or the command line, on every process."""

import asyncio
import base64
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.auth import FIND_KEY, MARK_USED, MARK_USED_EVERY_SECONDS, Authenticator
from app.problems import Unauthorized
from app.settings import Settings
from harness.processes import services
from harness.tenants import Tenant
from tests.support.api import assert_problem
from tests.support.database import recording_pool

KEY_SHAPE = re.compile(r"dn_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
AUTH_CACHE_SECONDS = "0.5"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def docnum(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``docnum`` command line against the test database."""
    env = {k: v for k, v in os.environ.items() if k != "DOCNUM_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**env, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def wait_out_auth_cache(settings: Settings) -> None:
    """Sleep past the time any process may trust a key it has already verified."""
    await asyncio.sleep(settings.auth_cache_seconds + 0.2)


async def test_a_new_key_is_shown_once_and_stored_only_as_a_hash(
    client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    made = await client.post(
        "/keys", json={"scope": "issue", "name": "billing"}, headers=tenant.admin
    )
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    match = KEY_SHAPE.fullmatch(key)
    assert match is not None
    assert made.json()["prefix"] == match.group(1)

    listed = await client.get("/keys", headers=tenant.admin)
    assert key not in listed.text and match.group(2) not in listed.text
    entry = next(k for k in listed.json()["items"] if k["prefix"] == match.group(1))
    assert set(entry) == {"prefix", "scope", "name", "created_at", "last_used_at", "revoked_at"}
    assert (entry["scope"], entry["name"]) == ("issue", "billing")

    row = await pool.fetchrow(
        "SELECT secret_hash, row_to_json(k)::text AS everything FROM api_keys k WHERE prefix = $1",
        match.group(1),
    )
    assert row["secret_hash"] == hashlib.sha256(key.encode()).digest()
    assert match.group(2) not in row["everything"]


async def test_keys_carry_256_random_bits_and_never_repeat(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    made = await asyncio.gather(
        *(client.post("/keys", json={}, headers=tenant.admin) for _ in range(40))
    )
    keys = [m.json()["key"] for m in made]
    secrets = []
    for key in keys:
        match = KEY_SHAPE.fullmatch(key)
        assert match is not None, key
        secrets.append(base64.urlsafe_b64decode(match.group(2) + "="))
    assert all(len(secret) == 32 for secret in secrets)
    assert len(set(keys)) == len(set(secrets)) == len({k.split("_")[1] for k in keys}) == 40


async def test_last_used_at_records_use(client: httpx.AsyncClient, tenant: Tenant) -> None:
    made = await client.post("/keys", json={}, headers=tenant.admin)
    prefix = made.json()["prefix"]

    async def last_used() -> str | None:
        listed = await client.get("/keys", headers=tenant.admin)
        used: str | None = next(k for k in listed.json()["items"] if k["prefix"] == prefix)[
            "last_used_at"
        ]
        return used

    assert await last_used() is None
    await client.get("/series", headers=bearer(made.json()["key"]))
    # Written in the background, within a second or so.
    deadline = time.monotonic() + 5 * MARK_USED_EVERY_SECONDS
    while await last_used() is None:
        assert time.monotonic() < deadline, "last_used_at not recorded"
        await asyncio.sleep(0.05)


async def test_authentication_only_reads_and_records_use_in_one_statement_for_all_keys(
    database_url: str, tenant: Tenant, other_tenant: Tenant
) -> None:
    """A database that accepts no writes can still authenticate; a wrong key is refused from
    memory when it comes again; when keys were used is written later, for all of them at once."""
    wrong = tenant.issue_key[:-4] + "AAAA"
    async with recording_pool(database_url) as (pool, sent):
        auth = Authenticator(pool, cache_seconds=60, size=100)
        for _ in range(3):
            for key in (tenant.issue_key, tenant.admin_key, other_tenant.issue_key):
                await auth.verify(key)
            with pytest.raises(Unauthorized):
                await auth.verify(wrong)
        statements = [q for q in sent if "RESET ALL" not in q]  # the pool's own, on release
        assert statements == [FIND_KEY] * 4
        await auth.mark_used()
        await auth.mark_used()  # nothing used since: nothing written
        assert sent.count(MARK_USED) == 1


async def test_revoking_through_the_api_stops_the_key_at_once_on_this_process(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    made = await client.post("/keys", json={"scope": "admin"}, headers=tenant.admin)
    key, prefix = made.json()["key"], made.json()["prefix"]
    assert (await client.get("/keys", headers=bearer(key))).status_code == 200  # now trusted

    revoked = await client.delete(f"/keys/{prefix}", headers=tenant.admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert_problem(await client.get("/keys", headers=bearer(key)), 401, "unauthorized")

    active = await client.get("/keys", headers=tenant.admin)
    assert prefix not in {k["prefix"] for k in active.json()["items"]}
    everything = await client.get("/keys", params={"revoked": "true"}, headers=tenant.admin)
    listed = next(k for k in everything.json()["items"] if k["prefix"] == prefix)
    assert listed["revoked_at"] == revoked.json()["revoked_at"]


async def test_revoking_twice_changes_nothing(client: httpx.AsyncClient, tenant: Tenant) -> None:
    prefix = (await client.post("/keys", json={}, headers=tenant.admin)).json()["prefix"]
    first = await client.delete(f"/keys/{prefix}", headers=tenant.admin)
    second = await client.delete(f"/keys/{prefix}", headers=tenant.admin)
    assert second.status_code == 200
    assert second.json() == first.json()


async def test_a_key_can_revoke_itself(client: httpx.AsyncClient, tenant: Tenant) -> None:
    made = await client.post("/keys", json={"scope": "admin"}, headers=tenant.admin)
    key, prefix = made.json()["key"], made.json()["prefix"]
    assert (await client.delete(f"/keys/{prefix}", headers=bearer(key))).status_code == 200
    assert_problem(await client.get("/keys", headers=bearer(key)), 401, "unauthorized")


async def test_another_tenants_key_cannot_be_revoked(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = other_tenant.issue_key.split("_")[1]
    assert_problem(
        await client.delete(f"/keys/{theirs}", headers=tenant.admin), 404, "key-not-found"
    )
    assert (await client.get("/series", headers=other_tenant.issuer)).status_code == 200


@pytest.mark.parametrize("prefix", ["0000000", "000000000", "ABCDEF01", "zzzzzzzz", "a%00bcdef"])
async def test_a_malformed_prefix_is_422(
    client: httpx.AsyncClient, tenant: Tenant, prefix: str
) -> None:
    assert_problem(
        await client.delete(f"/keys/{prefix}", headers=tenant.admin), 422, "invalid-request"
    )


@pytest.mark.parametrize(
    "body",
    [{"scope": "root"}, {"name": "x" * 101}, {"name": "line\nbreak"}, {"extra": 1}],
    ids=["unknown scope", "long name", "control character", "unknown field"],
)
async def test_key_creation_validates_its_body(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, object]
) -> None:
    assert_problem(
        await client.post("/keys", json=body, headers=tenant.admin), 422, "invalid-request"
    )


async def test_revocation_reaches_every_process_within_the_cache_time(
    database_url: str, service_dir: Path, tenant: Tenant
) -> None:
    env = {"DOCNUM_AUTH_CACHE_SECONDS": AUTH_CACHE_SECONDS}
    with services(database_url, service_dir, 2, env=env) as (first, second):
        async with httpx.AsyncClient(timeout=10) as http:
            made = await http.post(f"{first.url}/keys", json={}, headers=tenant.admin)
            key, prefix = made.json()["key"], made.json()["prefix"]
            for process in (first, second):  # both processes now trust the key from memory
                assert (await http.get(f"{process.url}/series", headers=bearer(key))).is_success

            revoked = await http.delete(f"{first.url}/keys/{prefix}", headers=tenant.admin)
            assert revoked.status_code == 200, revoked.text
            refused = await http.get(f"{first.url}/series", headers=bearer(key))
            assert_problem(refused, 401, "unauthorized")

            await asyncio.sleep(float(AUTH_CACHE_SECONDS) + 0.2)
            refused = await http.get(f"{second.url}/series", headers=bearer(key))
            assert_problem(refused, 401, "unauthorized")


async def test_cli_creates_a_key_printing_only_the_key_on_stdout(
    database_url: str, client: httpx.AsyncClient
) -> None:
    tenant = f"cli-{os.urandom(4).hex()}"
    made = docnum(
        database_url, "keys", "create", "--tenant", tenant, "--scope", "admin", "--name", "ci"
    )
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert len(lines) == 1 and made.stdout == lines[0] + "\n"
    match = KEY_SHAPE.fullmatch(lines[0])
    assert match is not None, made.stdout
    assert match.group(1) in made.stderr  # the human message names the prefix, on stderr

    response = await client.get("/keys", headers=bearer(lines[0]))
    assert response.status_code == 200, response.text
    assert [(k["prefix"], k["scope"], k["name"]) for k in response.json()["items"]] == [
        (match.group(1), "admin", "ci")
    ]


async def test_cli_lists_and_revokes_keys(
    database_url: str, client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    key = tenant.issue_key
    prefix = key.split("_")[1]
    assert (await client.get("/series", headers=bearer(key))).status_code == 200  # now cached

    listed = docnum(database_url, "keys", "list", "--tenant", tenant.name)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert {(row[0], row[1], row[2]) for row in rows} == {
        (tenant.admin_key.split("_")[1], "admin", "active"),
        (prefix, "issue", "active"),
    }
    assert key.split("_", 2)[2] not in listed.stdout  # the secret may itself hold "_"

    revoked = docnum(database_url, "keys", "revoke", "--tenant", tenant.name, prefix)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == ""
    await wait_out_auth_cache(settings)
    assert_problem(await client.get("/series", headers=bearer(key)), 401, "unauthorized")

    relisted = docnum(database_url, "keys", "list", "--tenant", tenant.name)
    assert f"{prefix}\tissue\trevoked" in relisted.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "list", "--tenant", "no-such-tenant-anywhere"),
        ("keys", "revoke", "--tenant", "no-such-tenant-anywhere", "0000abcd"),
        ("keys", "create", "--tenant", "t", "--scope", "root"),
        ("keys", "create", "--tenant", "t", "--scope", "issue", "--name", "two\nlines"),
    ],
    ids=["list unknown tenant", "revoke unknown tenant", "unknown scope", "name of two lines"],
)
def test_cli_failures_exit_nonzero_with_nothing_on_stdout(
    database_url: str, args: tuple[str, ...]
) -> None:
    result = docnum(database_url, *args)
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.strip()


async def test_cli_revoking_an_unknown_prefix_fails(database_url: str, tenant: Tenant) -> None:
    result = docnum(database_url, "keys", "revoke", "--tenant", tenant.name, "0000abcd")
    assert result.returncode != 0
    assert "0000abcd" in result.stderr and result.stdout == ""
