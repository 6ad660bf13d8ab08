"""Every setting of the service, read once from the environment.

Names are ``DOCNUM_<FIELD>`` (for example ``DOCNUM_PORT``), except ``DATABASE_URL``, which keeps the
name every PostgreSQL tool already uses.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCNUM_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "DOCNUM_DATABASE_URL"),
        description="PostgreSQL to use. Unset: an embedded PostgreSQL keeps its data in data_dir.",
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
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)
    auth_cache_seconds: float = Field(
        default=5.0, ge=0, description="How long a verified key is trusted before it is re-read."
    )
    demo: bool = Field(
        default=True,
        description="On first start with an empty database, create a demo tenant, key and series.",
    )
    session_secret: str | None = Field(
        default=None,
        description="Signs admin portal sessions. Unset: generated and kept in data_dir.",
    )
    shutdown_grace_seconds: float = Field(
        default=5.0,
        ge=0.5,
        description="After SIGTERM: how long requests in flight may take before they are "
        "answered 503 and the process exits. A second SIGTERM or SIGINT exits at once.",
    )
    secure_cookies: bool = Field(default=False, description="Mark cookies Secure (behind TLS).")


@lru_cache
def get_settings() -> Settings:
    return Settings()
