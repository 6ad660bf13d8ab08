-- A ledger entry can name the document that carries its number (an invoice id, an order
-- reference), so that an auditor can go from number to document and back. Bounded: it is a
-- reference, not the document.
ALTER TABLE numbers ADD COLUMN document_ref text CHECK (char_length(document_ref) <= 200);
CREATE INDEX numbers_document_ref ON numbers (series_id, document_ref)
    WHERE document_ref IS NOT NULL;

-- A number issued elsewhere (migrated history, a paper pad, an offline invoice) and recorded
-- afterwards. Its value is not taken from the series' counter.
ALTER TABLE numbers ADD COLUMN external boolean NOT NULL DEFAULT false;

-- A reserved number is held for a caller who confirms it (it becomes issued) or releases it.
ALTER TABLE numbers DROP CONSTRAINT numbers_status_check;
ALTER TABLE numbers ADD CONSTRAINT numbers_status_check
    CHECK (status IN ('issued', 'voided', 'reserved'));
