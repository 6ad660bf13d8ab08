"""The issuing engine: every number the service hands out comes from this package.

- ``engine``: the entry point, ``Issuer``. It resolves a request's date, format and counter and
  dispatches it to the issuer of its series' mode.
- ``transaction``: the steps every mode serves requests with (claim, take, render, hold, record,
  store), written once; a mode only says how it takes values.
- ``single``: what sequence and cached mode share, serving each request on its own.
- ``gapless``: gapless mode, with group commit.
- ``sequences`` and ``coalesce``: sequence mode, and the coalescer it owns, which serves
  concurrent requests for one counter with one ``nextval`` round trip.
- ``blocks``: cached mode, values reserved in blocks and served from memory.
- ``counters``: the counter row's SQL, shared by gapless and cached mode.
- ``issued``: what a request asks for and what it gets back, whatever the mode.

The package itself defines nothing: ``engine`` imports the modes, and the modes import
``issued``, which ``app.ledger`` and ``app.idempotency`` import too.
"""
