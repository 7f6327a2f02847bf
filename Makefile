# The two commands a new user needs: `make demo` and `make test`. Each does all its own set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install postgres chromium lint bench clean

demo: $(STAMP)
	$(BIN)/syncd demo

test: $(STAMP) postgres chromium
	$(BIN)/pytest -n 2

install: $(STAMP)

# A fresh Debian/Ubuntu lacks python3-venv (ensurepip): installed when root, otherwise named in one line.
# The example connector from outside the tree (README "Writing a connector") is installed too: tests sync it.
# One pip run for both (the connector has no dependencies of its own): a second run cost 3-14 s of start-up.
$(STAMP): pyproject.toml examples/jsonl-connector/pyproject.toml
	@bash scripts/ensure-venv.sh $(PYTHON) $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' -e examples/jsonl-connector
	touch $(STAMP)

# PostgreSQL's server binaries for the tests (Debian's package). Without root and without the package,
# the Postgres tests skip locally; with CI=true they must run, so a missing server fails here.
postgres:
	@bash scripts/ensure-postgres.sh || [ "$${CI:-}" != "true" ]

# Debian's Chromium for the dashboard's browser tests (Playwright drives it), the same way: installed when
# root; without it the browser tests skip locally, and with CI=true they must run.
chromium:
	@bash scripts/ensure-chromium.sh || [ "$${CI:-}" != "true" ]

lint: $(STAMP)
	$(BIN)/ruff check syncd connectors simulators migrations tests
	$(BIN)/mypy

bench: $(STAMP) postgres
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.db syncd-demo.db .pytest_cache .mypy_cache .ruff_cache
