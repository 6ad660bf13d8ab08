-- Rules a series' numbers follow beyond uniqueness: the order of their document dates, a closed
-- period, limits on their length and characters, and when to warn that a counter runs low.
ALTER TABLE series
    ADD COLUMN date_order text NOT NULL DEFAULT 'off' CHECK (date_order IN ('off', 'strict')),
    ADD COLUMN closed_through date,
    ADD COLUMN number_profile text
        CHECK (number_profile IN ('in-gst', 'it-sdi', 'fr-einvoice', 'es-aeat', 'pt-saft')),
    ADD COLUMN max_length smallint CHECK (max_length BETWEEN 1 AND 64),
    ADD COLUMN allowed_characters text CHECK (char_length(allowed_characters) BETWEEN 1 AND 200),
    ADD COLUMN warn_remaining bigint CHECK (warn_remaining >= 1);

-- The latest document date a gapless counter issued a number for, advanced by the statement that
-- advances the counter. Numbers issued before this column existed are in the ledger (gapless
-- series always keep one), so strict date order holds from their dates too.
ALTER TABLE counters ADD COLUMN last_date date;
UPDATE counters AS c SET last_date = (
    SELECT max(n.date) FROM numbers AS n
    WHERE n.series_id = c.series_id AND n.period = c.period AND n.variables = c.variables
)
FROM series AS s WHERE s.id = c.series_id AND s.mode = 'gapless';
