# Two commands matter: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: serve test lint types check spec-lint bench clean

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Keyplane needs Python 3.11 or newer as $(PYTHON) (make PYTHON=python3.12 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev,bench]'
	@touch $@

## serve: the service on SQLite at http://127.0.0.1:8000 (Swagger UI at /ui/)
serve: $(INSTALLED)
	$(BIN)/keyplane serve

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

## spec-lint: Redocly and Spectral on openapi/swagger.yaml, zero problems (needs Node.js 20+ and npm)
spec-lint:
	cd openapi && npm ci --no-audit --no-fund --loglevel=error
	cd openapi && npx --no-install redocly lint --config redocly.yaml swagger.yaml
	cd openapi && npx --no-install spectral lint --fail-severity=warn swagger.yaml

clean:
	rm -rf $(VENV) openapi/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis keyplane.db*
