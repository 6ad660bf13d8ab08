-- The expiry sweeper claims the held, lapsed reservation with the highest last value first (so
-- that the top of a counter is given back before what is below it), one per transaction. Without
-- an index in that order each claim sorted every held reservation: 76 ms a claim with 100,000
-- lapsed at once (PostgreSQL 15, EXPLAIN and a timed claim), so about two hours to sweep them
-- all. Read from this index, a claim takes 0.7 ms.
CREATE INDEX reservations_top ON reservations (last_value DESC) WHERE status = 'reserved';
