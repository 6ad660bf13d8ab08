-- A reservation holds numbers for a caller until it confirms them (they become issued), releases
-- them, or lets them expire. The numbers are taken from the series' counter like any others;
-- a series with a ledger also holds them there, with the status 'reserved'. A settled
-- reservation (confirmed, released, expired) is kept, so that confirming or releasing it again
-- answers as the first time did.
--
-- expires_at is computed by the database (now() + the time to live), and the database's clock
-- decides when it has passed: every process agrees on it, before and after a restart.
CREATE TABLE reservations (
    id           uuid PRIMARY KEY,
    series_id    bigint NOT NULL REFERENCES series (id),
    period       text NOT NULL,
    variables    text NOT NULL,
    date         date NOT NULL,
    "values"     bigint[] NOT NULL,
    numbers      text[] NOT NULL,
    -- The highest of "values": the counter's last value when nothing was taken after it.
    last_value   bigint NOT NULL,
    document_ref text CHECK (char_length(document_ref) <= 200),
    status       text NOT NULL DEFAULT 'reserved'
                 CHECK (status IN ('reserved', 'confirmed', 'released', 'expired')),
    reserved_at  timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    settled_at   timestamptz,
    CHECK ((status = 'reserved') = (settled_at IS NULL))
);
-- What the expiry sweeper scans: only reservations still held.
CREATE INDEX reservations_held ON reservations (expires_at) WHERE status = 'reserved';
-- What pruning scans: settled reservations, oldest first.
CREATE INDEX reservations_settled ON reservations (settled_at) WHERE settled_at IS NOT NULL;
