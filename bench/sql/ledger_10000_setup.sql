-- Tables shaped like the ledger and its chain events (columns, defaults, checks, indexes), for
-- ledger_10000.sql; apart from every series' ledger and chain, and emptied before each run.
CREATE TABLE IF NOT EXISTS bench_ledger (LIKE numbers INCLUDING ALL);
CREATE TABLE IF NOT EXISTS bench_ledger_events (LIKE ledger_events INCLUDING ALL);
CREATE SEQUENCE IF NOT EXISTS bench_ledger_runs;
TRUNCATE bench_ledger, bench_ledger_events;
