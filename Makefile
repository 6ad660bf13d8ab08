# The two commands of the README: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test browser pgbouncer node lint check-tests bench bench-quick clean

run: $(STAMP)
	$(BIN)/docnum serve

test: $(STAMP) browser pgbouncer node lint check-tests

# Browser tests drive Debian's Chromium; Playwright cannot download its own browser here.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Tests run the service through Debian's PgBouncer in transaction pooling mode too.
pgbouncer:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; }

# The TypeScript client's tests run Node.js; npm installs its pinned packages from the lockfile.
node:
	@command -v npm >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd clients/python && ../../$(BIN)/mypy

check-tests: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# The benchmark: about 9 minutes; writes bench/results.md and bench/throughput.png.
bench: $(STAMP)
	$(BIN)/python -m bench

# A 2-minute smoke run of the same; results stay in bench/out/.
bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e clients/python
	touch $(STAMP)

clean:
	rm -rf $(VENV) .docnum .pytest_cache .mypy_cache .ruff_cache
