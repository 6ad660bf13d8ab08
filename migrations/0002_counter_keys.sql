-- A counter is kept per period AND per the values of the variables the number shows, so that
-- `PO-BR07-0001`, `PO-BR08-0001`, `PO-BR07-0002` are each gapless; a series may instead share one
-- counter across variable values (shared_counter). `variables` holds the counter's variable
-- values as `name=value` pairs sorted by name and joined by ',' ('' when there are none): names
-- and values are drawn from [A-Za-z0-9_-], so the encoding is unambiguous.
--
-- Series that issued numbers before this migration counted every variable value on one counter.
-- They keep doing so (shared_counter = true): splitting their counter now would hand out values
-- that their shared counter already used.
ALTER TABLE series ADD COLUMN shared_counter boolean NOT NULL DEFAULT false;
UPDATE series SET shared_counter = true
WHERE EXISTS (SELECT 1 FROM counters WHERE counters.series_id = series.id);

-- Bumped by every change of a series. Issuing statements lock the series row (FOR KEY SHARE) and
-- compare it, and administration takes the row FOR UPDATE: no request that read an older
-- definition can take a value after a change committed.
ALTER TABLE series ADD COLUMN version bigint NOT NULL DEFAULT 1;

ALTER TABLE counters ADD COLUMN variables text NOT NULL DEFAULT '';
ALTER TABLE counters DROP CONSTRAINT counters_series_id_period_key;
ALTER TABLE counters ADD CONSTRAINT counters_key UNIQUE (series_id, period, variables);

ALTER TABLE numbers ADD COLUMN variables text NOT NULL DEFAULT '';
ALTER TABLE numbers DROP CONSTRAINT numbers_pkey;
ALTER TABLE numbers ADD PRIMARY KEY (series_id, period, variables, value);

-- Every format a series ever had, in the order they were set. A format applies to documents
-- dated from effective_from on (NULL: every date) until a later-set format covers that date.
-- Formats are never deleted: a new one is accepted only if nothing it can render could have been
-- rendered by any of them.
CREATE TABLE series_formats (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    series_id      bigint NOT NULL REFERENCES series (id),
    format         text NOT NULL,
    effective_from date,
    set_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX series_formats_series ON series_formats (series_id, id);
INSERT INTO series_formats (series_id, format, set_at)
SELECT id, format, created_at FROM series ORDER BY id;
