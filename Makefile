# Every target installs what it needs first; `make help` lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install test lint typecheck pytest migrate migrate-status migrate-verify schema-snapshot clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its dev tools

test: lint typecheck pytest ## lint, type-check and run the whole test suite (real PostgreSQL)

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP) ## mypy --strict
	$(VENV)/bin/mypy

pytest: $(STAMP) ## only the tests (pass ARGS=... to pytest)
	$(PY) -m pytest $(ARGS)

migrate: $(STAMP) ## apply pending sql/ files to the configured database
	$(PY) -m functions.migrate.app apply

migrate-status: $(STAMP) ## list applied and pending sql/ files
	$(PY) -m functions.migrate.app status

migrate-verify: $(STAMP) ## compare the live schema with sql/expected_schema.json (non-zero on drift)
	$(PY) -m functions.migrate.app verify

schema-snapshot: $(STAMP) ## rewrite sql/expected_schema.json from a throwaway database
	$(PY) -m tests.tools.snapshot_schema

clean: ## remove build output and caches (keeps .venv and .local)
	rm -rf build .aws-sam .pytest_cache .mypy_cache .ruff_cache
