# Two commands matter: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: serve test lint types check clean

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Keyplane needs Python 3.11 or newer as $(PYTHON) (make PYTHON=python3.12 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $@

## serve: the service on SQLite at http://127.0.0.1:8000 (Swagger UI at /ui/)
serve: $(INSTALLED)
	$(BIN)/keyplane serve

## test: the whole suite on SQLite, then on PostgreSQL (skipped, and said so, if unreachable)
test: $(INSTALLED)
	$(BIN)/pytest --db sqlite
	$(BIN)/pytest --db postgresql

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(INSTALLED)
	$(BIN)/mypy

check: lint types

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis keyplane.db*
