-- How many counters each series has, so that the limit on them (DOCNUM_MAX_COUNTERS_PER_SERIES)
-- is checked by reading one column instead of counting rows. Kept by a trigger on every counter
-- created, whichever statement creates it; counters are never deleted.
ALTER TABLE series ADD COLUMN counter_count bigint NOT NULL DEFAULT 0;
UPDATE series SET counter_count = (SELECT count(*) FROM counters WHERE counters.series_id = series.id);

CREATE FUNCTION docnum_count_counter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE series SET counter_count = counter_count + 1 WHERE id = NEW.series_id;
    RETURN NULL;
END
$$;

-- AFTER INSERT fires only for rows really inserted, not for an INSERT … ON CONFLICT that updated.
CREATE TRIGGER counters_counted AFTER INSERT ON counters
    FOR EACH ROW EXECUTE FUNCTION docnum_count_counter();
