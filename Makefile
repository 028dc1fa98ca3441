# Two commands matter: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
SERVING := $(VENV)/.serving
INSTALLED := $(VENV)/.installed

.PHONY: serve test lint types check spec-lint docs bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Keyplane needs Python 3.11 or newer as $(PYTHON) (make PYTHON=python3.12 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# What serving needs, and nothing else.
$(SERVING): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

# Serving, and the tests, linters and benchmark peers.
$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,dev,bench]'
	@touch $@ $(SERVING)

## serve: the service on SQLite at http://$(HOST):$(PORT) (Swagger UI at /ui/); make serve PORT=9000 HOST=0.0.0.0
serve: $(SERVING)
	$(BIN)/keyplane serve --host $(HOST) --port $(PORT)

## test: the whole suite on SQLite, then on PostgreSQL (skipped, and said so, if unreachable)
test: $(INSTALLED)
	$(BIN)/pytest --db sqlite
	$(BIN)/pytest --db postgresql

## bench: Keyplane against a FastAPI and a Django REST Framework peer (needs wrk); writes bench/results/
bench: $(INSTALLED)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(INSTALLED)
	$(BIN)/mypy

check: lint types

## docs: the documentation site into site/, strictly (a warning or a broken link fails it)
docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## spec-lint: Redocly and Spectral on openapi/swagger.yaml, zero problems (needs Node.js 20+ and npm)
spec-lint:
	cd openapi && npm ci --no-audit --no-fund --loglevel=error
	cd openapi && npx --no-install redocly lint --config redocly.yaml swagger.yaml
	cd openapi && npx --no-install spectral lint --fail-severity=warn swagger.yaml

clean:
	rm -rf $(VENV) openapi/node_modules site .pytest_cache .mypy_cache .ruff_cache .hypothesis keyplane.db*
