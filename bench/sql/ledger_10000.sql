-- What PostgreSQL alone takes to record a gapless batch of 10,000 numbers as Docnum's ledger
-- does: a row per number (its two unique indexes) and a chain event per number (about 200 bytes
-- of content and a 32-byte hash), in one transaction. The floor under "gapless batch of 10,000".
-- (pgbench reads a colon before a name as a variable, hence 'false' written apart.)
SELECT nextval('bench_ledger_runs') * 10000 AS base \gset
BEGIN;
INSERT INTO bench_ledger (series_id, period, variables, value, number, date, issued_at, status,
                          chain_seq, chain_hash)
SELECT 0, '2026', '', v, 'INV-2026-' || lpad(v::text, 12, '0'), current_date, now(), 'issued',
       v, decode(repeat('ab', 32), 'hex')
FROM generate_series(:base::bigint + 1, :base::bigint + 10000) AS v;
INSERT INTO bench_ledger_events (counter_id, seq, kind, value, content, hash)
SELECT 0, v, 'issued', v,
       '{"kind":"issued","row":{"date":"2026-11-30","external":' || 'false,'
       || '"issued_at":"2026-11-30T12:00:00.000000Z","number":"INV-2026-'
       || lpad(v::text, 12, '0') || '","period":"2026","status":"issued","value":' || v
       || ',"variables":""}}',
       decode(repeat('cd', 32), 'hex')
FROM generate_series(:base::bigint + 1, :base::bigint + 10000) AS v;
COMMIT;
