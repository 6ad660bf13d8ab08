-- A hash chain per counter of every gapless series (see app/chain.py and docs/ledger-chain.md).
--
-- Each change of the ledger is an event of its counter: its content (canonical JSON text, kept
-- as hashed) and hash = SHA-256(previous event's hash || content), the first event's previous
-- hash being 32 zero bytes. The counter row keeps the chain's head (how many events, last hash):
-- gapless issuing locks that row already, so events are appended in one order per counter.
CREATE TABLE ledger_events (
    counter_id bigint NOT NULL REFERENCES counters (id),
    seq        bigint NOT NULL CHECK (seq >= 1),
    kind       text NOT NULL,
    value      bigint,  -- the ledger row the event concerns; NULL for an event of the counter
    content    text NOT NULL,
    hash       bytea NOT NULL,
    PRIMARY KEY (counter_id, seq)
);

ALTER TABLE counters ADD COLUMN chain_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN chain_head bytea NOT NULL DEFAULT decode(repeat('00', 32), 'hex');

-- The last event that set the row as it is: the CSV export shows it, verification checks it.
ALTER TABLE numbers ADD COLUMN chain_seq bigint;
ALTER TABLE numbers ADD COLUMN chain_hash bytea;

-- Rows recorded before the chain existed: one event `recorded` each, holding the row as it stands
-- now, in the order the rows were issued. The content is the canonical JSON the application
-- writes (app/chain.py, ROW_TEXT), so that verification compares these rows like any other.
DO $$
DECLARE
    counter record;
    entry record;
    head bytea;
    position bigint;
BEGIN
    FOR counter IN
        SELECT c.id, c.series_id, c.period, c.variables
        FROM counters AS c JOIN series AS s ON s.id = c.series_id
        WHERE s.mode = 'gapless'
        ORDER BY c.id
    LOOP
        head := decode(repeat('00', 32), 'hex');
        position := 0;
        FOR entry IN
            SELECT n.value, '{"kind":"recorded","row":{"date":"'
                || to_char(n.date::timestamp, 'YYYY-MM-DD') || '"'
                || CASE WHEN n.document_ref IS NULL THEN ''
                        ELSE ',"document_ref":' || to_json(n.document_ref)::text END
                || ',"external":' || n.external::text
                || ',"issued_at":"'
                || to_char(n.issued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"'
                || ',"number":' || to_json(n.number)::text
                || ',"period":' || to_json(n.period)::text
                || ',"status":' || to_json(n.status)::text
                || ',"value":' || n.value::text
                || ',"variables":' || to_json(n.variables)::text
                || CASE WHEN n.void_reason IS NULL THEN ''
                        ELSE ',"void_reason":' || to_json(n.void_reason)::text END
                || CASE WHEN n.voided_at IS NULL THEN ''
                        ELSE ',"voided_at":"' || to_char(n.voided_at AT TIME ZONE 'UTC',
                                                         'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"' END
                || '}}' AS content
            FROM numbers AS n
            WHERE n.series_id = counter.series_id AND n.period = counter.period
                AND n.variables = counter.variables
            ORDER BY n.issued_at, n.value
        LOOP
            position := position + 1;
            head := sha256(head || convert_to(entry.content, 'UTF8'));
            INSERT INTO ledger_events (counter_id, seq, kind, value, content, hash)
            VALUES (counter.id, position, 'recorded', entry.value, entry.content, head);
        END LOOP;
        UPDATE counters SET chain_seq = position, chain_head = head WHERE id = counter.id;
    END LOOP;
    UPDATE numbers AS n SET chain_seq = e.seq, chain_hash = e.hash
    FROM ledger_events AS e JOIN counters AS c ON c.id = e.counter_id
    WHERE n.series_id = c.series_id AND n.period = c.period AND n.variables = c.variables
        AND n.value = e.value;
END
$$;
