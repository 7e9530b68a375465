# Every target installs what it needs first; `make help` lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed-stamp
# make dev installs only what the local server runs ([serve]); the first `make test` (or any
# target needing the tools) installs the rest ([dev]).
SERVE_STAMP := $(VENV)/.serve-stamp
# Bytecode caches on, even where the environment turns them off: every test worker, subprocess
# and local function process imports the same modules, and compiling them each time was most
# of a worker's start (collection: ~6 s of CPU against ~2 s).
unexport PYTHONDONTWRITEBYTECODE
# Test workers: twice the cores. The tests spend about half their time waiting (stand-ins'
# timeouts, subprocesses, PostgreSQL), so two workers per core keep both cores busy; one per
# core left them idle (same 222 tests: ~48 s with 2 workers, ~39 s with 4, on 2 cores).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))
# The interpreter the tests run on (CI: TEST_PY=build/py313/bin/python); PY stays .venv's,
# which the install targets own.
TEST_PY ?= $(PY)
PYTEST := $(TEST_PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

.DEFAULT_GOAL := help
.PHONY: help install dev token invoke test test-fast lint typecheck pytest pytest-pooler bench openapi migrate migrate-status \
	migrate-verify schema-snapshot package lock validate clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# uv installs in seconds what pip takes a minute for; pip only brings uv into the new venv.
$(UV):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv

$(SERVE_STAMP): pyproject.toml | $(UV)
	$(UV) pip install --quiet --python $(PY) -e '.[serve]'
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml | $(UV)
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -e '.[dev]'
	touch $(STAMP) $(SERVE_STAMP)

install: $(STAMP) ## create .venv and install the project with its dev tools

dev: $(SERVE_STAMP) ## run the backend on http://127.0.0.1:8787 (PORT=...; embedded PostgreSQL and stand-ins as needed)
	$(PY) -m dev.stack.dev

# Whose token: AS=bob on the command line. Not USER (make imports the shell's $USER) and not a
# plain `AS ?=`: AS is make's built-in assembler variable and cross-compiling shells export it.
TOKEN_AS := $(if $(filter command line,$(origin AS)),$(AS),alice)
token: $(SERVE_STAMP) ## print a bearer token from the local issuer: make token AS=alice
	@$(PY) -m dev.stack.token_issuer --user $(TOKEN_AS)

invoke: $(STAMP) ## run one handler on a sample event: make invoke FN=sessions EVENT=events/sessions_list.json
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "usage: make invoke FN=<function> EVENT=events/<file>.json"; exit 2; }
	$(PY) -m dev.stack.invoke $(FN) $(EVENT)

# The database-facing tests, run a second time through a real PgBouncer in transaction mode.
POOLER_TESTS := tests/system/test_api.py tests/integration/test_users.py \
	tests/integration/test_clerk_webhook.py tests/system/test_faults.py tests/integration/test_pool.py \
	tests/system/test_round_trips.py tests/integration/test_queries.py \
	tests/integration/test_migrations.py tests/system/test_hostile_input.py tests/system/test_events.py \
	tests/system/test_stream.py tests/system/test_titles.py tests/system/test_me.py

test: lint typecheck pytest pytest-pooler ## lint, type-check, the whole suite, then again through PgBouncer

lint: $(STAMP) ## ruff check, format check and template lint (cfn-lint, offline)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	AWS_DEFAULT_REGION=us-east-1 $(VENV)/bin/cfn-lint template.yaml

typecheck: $(STAMP) ## mypy --strict
	$(VENV)/bin/mypy

pytest: $(STAMP) ## only the tests, in parallel (pass ARGS=... to pytest)
	$(PYTEST) $(ARGS)

test-fast: $(STAMP) ## the inner loop: the tests not marked slow, in parallel, no lint
	$(PYTEST) -m "not slow" $(ARGS)

pytest-pooler: $(STAMP) ## the database tests through PgBouncer (transaction mode; needs pgbouncer)
	@if command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer; then \
		echo "TEST_VIA_POOLER=1 pytest $(POOLER_TESTS)"; \
		TEST_VIA_POOLER=1 $(PYTEST) $(POOLER_TESTS) $(ARGS); \
	elif [ -n "$$CI" ]; then \
		echo "pgbouncer is not installed, and CI must run the pooler tests"; exit 1; \
	else \
		echo "SKIPPED: the pooler run needs pgbouncer (Debian: apt-get install pgbouncer)"; \
	fi

migrate: $(STAMP) ## apply pending sql/ files to the configured database
	$(PY) -m functions.migrate.app apply

migrate-status: $(STAMP) ## list applied and pending sql/ files
	$(PY) -m functions.migrate.app status

migrate-verify: $(STAMP) ## compare the live schema with sql/expected_schema.json (non-zero on drift)
	$(PY) -m functions.migrate.app verify

schema-snapshot: $(STAMP) ## rewrite sql/expected_schema.json from a throwaway database
	$(PY) -m dev.tools.snapshot_schema

bench: $(STAMP) ## run the benchmark suite (ARGS=--smoke for a tiny run); writes build/bench/
	$(PY) -m dev.bench.run $(ARGS)

openapi: $(STAMP) ## regenerate functions/openapi.json from the handlers
	$(PY) -m dev.tools.openapi

package: $(STAMP) ## build .aws-sam/build as `sam build` does (same recipe), without sam or Docker
	$(PY) -m dev.tools.package all

lock: $(STAMP) ## refresh layer/requirements.txt (the layer's pinned, hashed wheels) from pyproject.toml
	$(PY) -m dev.tools.package lock --upgrade

validate: $(STAMP) ## lint the SAM template offline
	AWS_DEFAULT_REGION=us-east-1 $(VENV)/bin/cfn-lint template.yaml

clean: ## remove build output and caches (keeps .venv and .local)
	rm -rf build .aws-sam .pytest_cache .mypy_cache .ruff_cache
