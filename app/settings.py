"""Every setting of the service, read once from the environment.

Names are ``DOCNUM_<FIELD>`` (for example ``DOCNUM_PORT``), except ``DATABASE_URL``, which keeps the
name every PostgreSQL tool already uses.
"""

import datetime
import math
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Literal

from limits import parse
from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

# A secret (the portal's session secret, the metrics token) needs at least this many characters,
# and at least this many bits by the frequencies of its own characters: length times the Shannon
# entropy of the characters it holds. That refuses short secrets, few distinct characters and a
# character repeated over and over; it cannot tell a phrase from a random string, so generate one.
MIN_SECRET_LENGTH = 32
MIN_SECRET_BITS = 128
MAKE_A_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"  # noqa: S105


def secret_bits(secret: str) -> float:
    """The secret's length times the Shannon entropy of its characters' frequencies."""
    length = len(secret)
    counts = Counter(secret).values()
    return -sum(count * math.log2(count / length) for count in counts)


def secret_weakness(secret: str) -> str | None:
    """Why ``secret`` is too weak to sign or guard anything, or None when it is strong enough.
    The reason never quotes the secret."""
    if len(secret) < MIN_SECRET_LENGTH:
        return f"has {len(secret)} characters, fewer than {MIN_SECRET_LENGTH}"
    bits = secret_bits(secret)
    if bits < MIN_SECRET_BITS:
        return (
            f"has about {bits:.0f} bits by its characters' frequencies, fewer than "
            f"{MIN_SECRET_BITS} (too few distinct characters, or too many repeated)"
        )
    return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCNUM_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "DOCNUM_DATABASE_URL"),
        description="PostgreSQL to use. Unset: an embedded PostgreSQL keeps its data in data_dir.",
    )
    direct_database_url: str | None = Field(
        default=None,
        description="PostgreSQL reached without a transaction pooler in between, for listening "
        "to series changes and for migrations. Unset: DATABASE_URL.",
    )
    transaction_pooling: bool = Field(
        default=False,
        description="DATABASE_URL goes through a transaction pooler (PgBouncer pool_mode = "
        "transaction): session settings are sent with each transaction, not at connection.",
    )
    statement_cache_size: int = Field(
        default=100,
        ge=0,
        description="Prepared statements asyncpg keeps per connection; 0 behind PgBouncer "
        "older than 1.21 (or without max_prepared_statements) in transaction mode.",
    )
    data_dir: Path = Field(
        default=Path(".docnum"),
        description="Where the embedded PostgreSQL and the first-start admin key are kept.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: JSON lines unless standard error is a terminal."
    )
    log_buffer_lines: int = Field(
        default=10_000,
        ge=1,
        description="Lines of successful requests that may wait for the log writer; past it they "
        "are dropped and counted. Lines of failed requests and warnings are never dropped.",
    )
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    pool_timeout_ms: int = Field(
        default=2000,
        ge=1,
        description="How long a request waits for a free database connection before answering 503.",
    )
    lock_timeout_ms: int = Field(
        default=2000,
        ge=1,
        description="How long a gapless issue waits for a counter row lock before answering 503.",
    )
    statement_timeout_ms: int = Field(default=10_000, ge=1)
    database_timeout_ms: int = Field(
        default=4000,
        ge=1,
        description="Client-side deadline: the longest a request holds a database connection (a "
        "transaction or a statement, its lock waits included). Past it the connection is dropped "
        "and the request answered 503, so a frozen or unreachable database costs at most "
        "pool_timeout_ms + database_timeout_ms. Keep it above lock_timeout_ms.",
    )
    snapshot_timeout_ms: int = Field(
        default=60_000,
        ge=1,
        description="The database_timeout_ms of a chain verification or an auditor's ZIP, which "
        "read a whole period in one snapshot on one connection.",
    )
    connect_timeout_ms: int = Field(
        default=1500, ge=1, description="How long opening a database connection may take."
    )
    tcp_keepalive_seconds: int = Field(
        default=10,
        ge=1,
        description="Idle seconds before TCP keepalive probes on database connections; a peer "
        "that stops answering (a vanished host, a partition) is dropped after about twice this.",
    )
    max_batch: int = Field(default=10_000, ge=1, le=1_000_000)
    max_body_bytes: int = Field(default=65_536, ge=1024)
    max_concurrent_requests: int = Field(
        default=1024, ge=1, description="Requests served at once per process; more get 503."
    )
    max_concurrent_requests_per_tenant: int | None = Field(
        default=None,
        ge=1,
        description="Requests one tenant's keys may have in progress at once per process; more "
        "get 429. Unset: no cap beyond max_concurrent_requests.",
    )
    max_concurrent_exports: int = Field(
        default=4,
        ge=1,
        description="CSV ledger exports streamed at once per process; more get 503.",
    )
    key_rate_limit: str | None = Field(
        default=None,
        description="Requests one API key may make per process in a moving window, as "
        "`600/minute` (the `limits` notation: `<count>/<second|minute|hour|day>`); more get 429. "
        "Unset: no limit.",
    )
    tenant_rate_limit: str | None = Field(
        default=None,
        description="Requests all keys of one tenant may make together per process, in the same "
        "notation; more get 429. Unset: no limit.",
    )
    idempotency_ttl_seconds: int = Field(
        default=86_400,
        ge=60,
        description="How long an Idempotency-Key's answer is kept, and a settled reservation "
        "(confirmed, released or expired) answers confirm and release as it did.",
    )
    reservation_ttl_seconds: int = Field(
        default=900,
        ge=1,
        description="How long a reservation holds its numbers when it names no ttl_seconds.",
    )
    max_reservation_ttl_seconds: int = Field(
        default=86_400,
        ge=1,
        description="The longest ttl_seconds a reservation may ask for; longer gets 422.",
    )
    reservation_sweep_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often each process expires the reservations whose time has passed "
        "(by the database's clock); a confirm that comes before the sweep is refused all the "
        "same.",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified key is trusted, and a refused one refused, before it is "
        "read again.",
    )
    cached_keys: int = Field(
        default=10_000,
        ge=1,
        description="API keys a process remembers, verified and refused each; past it the least "
        "recently used is read again when next sent.",
    )
    cached_series: int = Field(
        default=10_000,
        ge=1,
        description="Series definitions a process keeps in memory; past it the least recently "
        "used is read again when next needed.",
    )
    cached_counters: int = Field(
        default=10_000,
        ge=1,
        description="Counters a process keeps state for in memory: cached-mode blocks and "
        "sequence names, each up to this many. Past it the least recently used is dropped; a "
        "cached-mode block gives its unused values back in the background, as at shutdown.",
    )
    cached_block_seconds: float = Field(
        default=0.25,
        ge=0,
        le=60,
        description="A busy cached-mode counter reserves blocks that last at least this long at "
        "the rate it is used (never fewer values than the series' block_size, at most "
        "100 times it), so that the next block is there before the current one runs out. 0 keeps "
        "every block at block_size. What a crash skips grows with it: see docs/guarantees.md.",
    )
    max_counters_per_series: int = Field(
        default=50_000,
        ge=1,
        description="Counters a series may have (one per period and variable values): a number "
        "that needs one more gets 409 /problems/too-many-counters. Requests creating counters "
        "of one series at the same moment may go past it by one each.",
    )
    earliest_date: datetime.date = Field(
        default=datetime.date(2000, 1, 1),
        description="The earliest document date issued for; earlier dates get 422.",
    )
    latest_date: datetime.date = Field(
        default=datetime.date(2099, 12, 31),
        description="The latest document date issued for; later dates get 422.",
    )
    demo: bool | None = Field(
        default=None,
        description="On first start with an empty database, create a demo tenant, key and series "
        "and print its key. Unset: only when listening on a loopback address.",
    )
    session_secret: str | None = Field(
        default=None,
        description="Signs admin portal sessions. Unset: generated and kept in data_dir. At least "
        "32 characters and 128 bits by its characters' frequencies; a weaker one is refused.",
    )
    require_if_match: bool = Field(
        default=False,
        description="Refuse (428) a change of a series that sends no If-Match with its ETag.",
    )
    shutdown_grace_seconds: float = Field(
        default=5.0,
        ge=0.5,
        description="After SIGTERM: how long requests in flight may take before they are "
        "answered 503 and the process exits. A second SIGTERM or SIGINT exits at once.",
    )
    secure_cookies: bool = Field(default=False, description="Mark cookies Secure (behind TLS).")
    metrics_token: str | None = Field(
        default=None,
        description="A scrape of /metrics that presents it (Authorization: Bearer) sees each "
        "tenant's series; any other scrape sees sums only. Unset: nobody sees them.",
    )

    @field_validator("key_rate_limit", "tenant_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str | None) -> str | None:
        """A limit must read as one rate; empty is unset."""
        if not value:
            return None
        try:
            parse(value)
        except ValueError:
            raise PydanticCustomError(
                "rate_limit", "not a rate such as 600/minute: {value}", {"value": value}
            ) from None
        return value

    @field_validator("session_secret", "metrics_token")
    @classmethod
    def _strong_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A configured secret must be strong; empty is unset (Compose passes empty values)."""
        weakness = secret_weakness(value) if value else None
        if weakness is not None:
            raise PydanticCustomError(
                "weak_secret",
                "DOCNUM_{name} is too weak: it {weakness}. Make one with: {make}",
                {"name": str(info.field_name).upper(), "weakness": weakness, "make": MAKE_A_SECRET},
            )
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
