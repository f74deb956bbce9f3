# statsapi — the two commands that matter:
#   make run    start the API on the embedded default (SQLite, in-process limits/cache)
#   make test   install everything the suite needs, then run the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test install lint format openapi bench bench-replicas rolling-deploy clean

$(BIN)/flask: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

statsapi/static/vendor/redoc/redoc.standalone.js: requirements/docs-assets.txt | $(BIN)/flask
	$(BIN)/python scripts/fetch_docs_assets.py

run: $(BIN)/flask statsapi/static/vendor/redoc/redoc.standalone.js
	$(BIN)/flask --app statsapi run --port $(PORT)

install:
	scripts/bootstrap.sh

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check statsapi migrations tests bench scripts gunicorn.conf.py
	$(BIN)/ruff format --check statsapi migrations tests bench scripts gunicorn.conf.py
	$(BIN)/mypy

format: install
	$(BIN)/ruff format statsapi migrations tests bench
	$(BIN)/ruff check --fix statsapi migrations tests bench

openapi: $(BIN)/flask
	STATSAPI_ENV=testing $(BIN)/flask --app statsapi openapi write openapi/openapi.json

# Issue 7's table side by side in one run (~10 min) -> bench/RESULTS.md.
# A smoke check: make bench BENCH_ARGS=--quick; one row: BENCH_ARGS='--only 3'.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# 1, 2 and 3 API replicas behind nginx, side by side (~4 min) -> bench/REPLICAS.md.
bench-replicas: install
	$(BIN)/python bench/replicas.py $(BENCH_ARGS)

# Replace the API replicas behind nginx with a new build, one at a time (docs/scaling.md,
# "Rolling deploys"). Plain python3, no venv needed on the host that runs nginx:
#   make rolling-deploy ROLLING_CONFIG=/etc/statsapi/replicas.toml ROLLING_SOURCE=/srv/statsapi/releases/42
# ROLLING_ARGS passes more options: --dry-run, --only api-1, --rollback-source DIR, --ready-timeout 90.
ROLLING_CONFIG ?=
ROLLING_SOURCE ?=
ROLLING_ARGS ?=
rolling-deploy:
	@test -n "$(ROLLING_CONFIG)" -a -n "$(ROLLING_SOURCE)" || { \
	  echo "usage: make rolling-deploy ROLLING_CONFIG=FILE ROLLING_SOURCE=DIR [ROLLING_ARGS='--dry-run ...']" >&2; exit 2; }
	$(PYTHON) scripts/rolling_deploy.py --config "$(ROLLING_CONFIG)" --source "$(ROLLING_SOURCE)" $(ROLLING_ARGS)

clean:
	rm -rf $(VENV) node_modules instance .pytest_cache .mypy_cache .ruff_cache statsapi/static/vendor
