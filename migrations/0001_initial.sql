-- Tenants own series and API keys; nothing crosses a tenant boundary.
CREATE TABLE tenants (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Keys are stored as a SHA-256 of the secret; the prefix finds the row and is shown to people.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    bigint NOT NULL REFERENCES tenants (id),
    prefix       text NOT NULL UNIQUE,
    secret_hash  bytea NOT NULL,
    scope        text NOT NULL CHECK (scope IN ('issue', 'admin')),
    name         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE series (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         bigint NOT NULL REFERENCES tenants (id),
    name              text NOT NULL,
    format            text NOT NULL,
    mode              text NOT NULL CHECK (mode IN ('gapless', 'sequence', 'cached')),
    reset             text NOT NULL CHECK (reset IN ('never', 'yearly', 'monthly', 'daily')),
    start             bigint NOT NULL,
    step              bigint NOT NULL CHECK (step >= 1),
    max_value         bigint,
    timezone          text NOT NULL,
    fiscal_year_start smallint NOT NULL DEFAULT 1 CHECK (fiscal_year_start BETWEEN 1 AND 12),
    block_size        integer NOT NULL DEFAULT 100 CHECK (block_size >= 1),
    ledger            boolean NOT NULL,
    description       text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    archived_at       timestamptz,
    UNIQUE (tenant_id, name),
    CHECK (max_value IS NULL OR max_value >= start)
);

-- One row per (series, period). gapless: the last value handed out; cached: the last value
-- reserved for some process; sequence: unused (the row's id names the PostgreSQL sequence).
CREATE TABLE counters (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    series_id  bigint NOT NULL REFERENCES series (id),
    period     text NOT NULL,
    last_value bigint NOT NULL,
    UNIQUE (series_id, period)
);

-- The ledger. The unique constraint on (series_id, number) is the database's own guarantee that
-- a formatted number is never recorded twice, whatever the application does.
CREATE TABLE numbers (
    series_id   bigint NOT NULL REFERENCES series (id),
    period      text NOT NULL,
    value       bigint NOT NULL,
    number      text NOT NULL,
    date        date NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    status      text NOT NULL DEFAULT 'issued' CHECK (status IN ('issued', 'voided')),
    void_reason text,
    voided_at   timestamptz,
    PRIMARY KEY (series_id, period, value),
    UNIQUE (series_id, number)
);

-- A retried request finds its first answer here. Rows are claimed inside the transaction that
-- issues the numbers, so a claim and its answer commit or vanish together.
CREATE TABLE idempotency_keys (
    tenant_id    bigint NOT NULL,
    series_id    bigint NOT NULL,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    status_code  smallint,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, series_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Every administrative change, written in the transaction that makes it.
CREATE TABLE audit_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id bigint NOT NULL REFERENCES tenants (id),
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,
    series    text,
    details   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id DESC);
