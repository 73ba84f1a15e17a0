# finegrid — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

ACCOUNTS ?= 2000
MONTHS ?= 24
END ?= 202510
SEED ?= 42

export LANDING_DIR ?= data/landing
export WAREHOUSE_PATH ?= data/warehouse.duckdb
export PUBLISH_DIR ?= data/publish
export PII_VAULT_PATH ?= data/pii_vault.duckdb
export DAGSTER_HOME ?= $(CURDIR)/dagster_home
TRUTH_DIR ?= data/truth
KEY_FILE := data/.pii_key
# PII_KEY from the environment, else a local key made once (with a warning) for demos.
WITH_KEY = PII_KEY="$${PII_KEY:-$$(cat $(KEY_FILE))}"

# dbt runs with the warehouse path given explicitly (absolute), whatever the working directory.
DBT = $(VENV)/bin/finegrid-dbt
DBT_ARGS = --project-dir dbt_project --profiles-dir dbt_project \
  --warehouse $(abspath $(WAREHOUSE_PATH))
MANIFEST := dbt_project/target/manifest.json
DBT_FILES := $(shell find dbt_project/models dbt_project/macros dbt_project/seeds dbt_project/tests \
  -type f 2>/dev/null) dbt_project/dbt_project.yml dbt_project/profiles.yml

.PHONY: demo run backfill test ui setup simulate lint format bench bench-simulator clean key docs freshness ml-report rebuild portability

## setup: the venv with the pinned dependencies, and the dbt manifest the code location reads
setup: $(STAMP) $(MANIFEST)

$(MANIFEST): $(STAMP) $(DBT_FILES)
	$(PY) -m orchestration parse

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

key:
	@mkdir -p data $(DAGSTER_HOME)
	@if [ -z "$$PII_KEY" ] && [ ! -s $(KEY_FILE) ]; then \
	  $(PY) -c "import secrets; print(secrets.token_hex(32))" > $(KEY_FILE); chmod 600 $(KEY_FILE); \
	  echo "WARNING: PII_KEY is not set; created a local demo key in $(KEY_FILE)." \
	       "Set PII_KEY in the environment for real data." >&2; fi

simulate: setup
	$(PY) -m simulator --accounts $(ACCOUNTS) --months $(MONTHS) --end $(END) --seed $(SEED) \
	  --out $(LANDING_DIR) --truth $(TRUTH_DIR) --force

## demo: set up, simulate the default drop (ACCOUNTS × MONTHS), run the whole pipeline, summarise
demo: setup key
	rm -f $(WAREHOUSE_PATH) $(WAREHOUSE_PATH).wal $(PII_VAULT_PATH) $(PII_VAULT_PATH).wal
	$(MAKE) --no-print-directory simulate
	$(WITH_KEY) $(PY) -m orchestration run 2>data/pipeline.log || (tail -30 data/pipeline.log; exit 1)
	@echo "Dagster log: data/pipeline.log · look around: make ui · truth: $(TRUTH_DIR)"

## run: the pipeline alone, on whatever LANDING_DIR holds
run: setup key
	$(WITH_KEY) $(PY) -m orchestration run

## backfill: every month of LANDING_DIR, the models and publishing for each month too
backfill: setup key
	$(WITH_KEY) $(PY) -m orchestration backfill

## test: set up, then the whole suite (three workers on two cores: the end-to-end files spend
## much of their time waiting on dbt, the Dagster daemon and Chromium, one file per worker)
test: setup
	$(PY) -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder

## ui: the Dagster UI on http://127.0.0.1:3000
ui: setup key
	$(WITH_KEY) $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## bench: the pipeline stage by stage on BENCH_SIZES accounts × BENCH_MONTHS, with the feature floor
## and one more month on top (JSON and table in data/bench); BENCH_ARGS adds bench_pipeline.py options
BENCH_SIZES ?= 10000,100000
BENCH_MONTHS ?= 24
BENCH_ARGS ?=
bench: setup
	$(PY) bench/bench_pipeline.py --accounts $(BENCH_SIZES) --months $(BENCH_MONTHS) --out data/bench $(BENCH_ARGS)

## bench-simulator: time the simulator on BENCH_ACCOUNTS × 24 months
bench-simulator: setup
	$(PY) bench/bench_simulator.py --accounts $${BENCH_ACCOUNTS:-100000}

## ml-report: segments and risk scores against the simulator's truth on a larger drop
ml-report: setup
	$(PY) bench/ml_truth_report.py --accounts $${ML_ACCOUNTS:-20000} --months 24 --out data/ml-report

## portability: the dbt project parsed with a second adapter (dbt-trino) in a venv of its own,
## .venv-trino, so the platform's dependencies stay as pinned; not in CI (see docs/scaling.md)
TRINO_VENV := .venv-trino
portability:
	test -x $(TRINO_VENV)/bin/dbt || ($(PYTHON) -m venv $(TRINO_VENV) && \
	  $(TRINO_VENV)/bin/pip install -q dbt-core==1.11.16 dbt-trino==1.11.0)
	$(TRINO_VENV)/bin/dbt parse --project-dir dbt_project --profiles-dir dbt_project/portability \
	  --target-path target/trino

## rebuild: every dbt model rebuilt whole (`dbt build --full-refresh`), e.g. after an upgrade
## changes an incremental model's columns
rebuild: setup
	$(DBT) build --full-refresh $(DBT_ARGS)

## docs: dbt's documentation site (catalog from the warehouse) in dbt_project/target
docs: setup
	$(DBT) docs generate $(DBT_ARGS)
	@echo "serve with: $(DBT) docs serve --project-dir dbt_project --profiles-dir dbt_project"

## freshness: dbt source freshness of the raw tables (load time against each contract's latency)
freshness: setup
	$(DBT) source freshness $(DBT_ARGS)

clean:
	rm -rf data dbt_project/target && git clean -fdXq dagster_home
