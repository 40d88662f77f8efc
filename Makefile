# The one door in. `make` alone lists the targets.
# Downloads and builds are cached in $(SP_CACHE); the local stack's state lives in .local-stack/.

SHELL := /bin/bash
.DEFAULT_GOAL := help
export SP_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/sensor-pipeline
VENV := .venv
BIN := $(VENV)/bin
ENV ?= dev
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "; printf "Targets (cache: $(SP_CACHE)):\n"} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.installed: pyproject.toml scripts/bootstrap-venv.sh
	@bash scripts/bootstrap-venv.sh
	@touch $@

.PHONY: venv
venv: $(BIN)/.installed ## Create .venv and install the project with pinned dependencies

# --- local stack ---------------------------------------------------------------------------------
.PHONY: local-up local-infra-up local-down local-status local-clean
local-up: venv ## Start the whole pipeline locally (Kafka, MongoDB-wire server, moto, Spark, API, producer, dashboard)
	@$(BIN)/sensor-pipeline stack up

local-infra-up: venv ## Start only Kafka, the MongoDB-wire server and the AWS emulator
	@$(BIN)/sensor-pipeline stack up --infra-only

local-down: venv ## Stop everything local-up started
	@$(BIN)/sensor-pipeline stack down

local-status: venv ## Show the state of each local service
	@$(BIN)/sensor-pipeline stack status

local-clean: venv ## Stop the local stack and delete its data, logs and checkpoints
	@$(BIN)/sensor-pipeline stack clean

# --- quality -------------------------------------------------------------------------------------
.PHONY: lint typecheck fmt test test-all unit integration chaos test-infra bench bench-capacity bench-store bench-dashboard tools browser sandbox
PY_DIRS := src jobs tests benchmarks scripts
# Each run keeps its per-test durations (JUnit XML) in test-artifacts/.
JUNIT = --junitxml=test-artifacts/junit-$@.xml

lint: venv ## ruff check + format check, compose file up to date
	@$(BIN)/ruff check $(PY_DIRS)
	@$(BIN)/ruff format --check $(PY_DIRS)
	@$(BIN)/sensor-pipeline stack compose --check

fmt: venv ## Format the code
	@$(BIN)/ruff format $(PY_DIRS) && $(BIN)/ruff check --fix $(PY_DIRS)

typecheck: venv ## mypy (strict) on src/ and jobs/
	@$(BIN)/mypy

unit: venv ## Unit tests only (no services)
	@$(BIN)/pytest tests/unit $(JUNIT) $(PYTEST_ARGS)

integration: venv browser sandbox ## Integration tests (start the local stack's services if they are not running)
	@$(BIN)/pytest tests/integration $(JUNIT) $(PYTEST_ARGS)

chaos: venv ## Fault and fuzz suites in full (make test runs a CI-sized part): prints lost/duplicated per case
	@SP_TEST_ALL=1 SP_CHAOS=full $(BIN)/pytest tests/chaos $(JUNIT) $(PYTEST_ARGS)

tools: venv ## Install the pinned infra tools (checkov) into the cache
	@bash scripts/install-tools.sh

browser: ## Install Debian's chromium for the browser tests, if missing (apt-get)
	@bash scripts/install-browser.sh

sandbox: ## Install Debian's bubblewrap for the deploy rehearsal's container runtime, if missing (apt-get)
	@bash scripts/install-sandbox.sh

test-infra: tools ## Terraform fmt/validate/test and checkov, offline
	@$(BIN)/pytest tests/infra $(JUNIT) $(PYTEST_ARGS)

test: venv tools browser sandbox lint typecheck ## The suite (~7 min warm): every kind of test; cases marked slow are listed as skipped
	@bash scripts/test.sh $(PYTEST_ARGS)

test-all: venv tools browser sandbox lint typecheck ## Everything: make test plus the slow cases, chaos at full size
	@SP_TEST_ALL=1 SP_CHAOS=full $(BIN)/pytest tests $(JUNIT) $(PYTEST_ARGS)

bench: venv ## Benchmarks: pipeline throughput and latency against the original design's baseline
	@$(BIN)/python benchmarks/pipeline.py $(BENCH_ARGS)

bench-capacity: venv ## Benchmark: only the capacity search (warm-up, then offered rates stepped up); BENCH_ARGS="--steps ..."
	@$(BIN)/python benchmarks/pipeline.py --capacity-only $(BENCH_ARGS)

bench-store: venv ## Benchmark: the store alone, per FerretDB configuration (batch size, SQLite or PostgreSQL)
	@$(BIN)/python benchmarks/store_backends.py $(BENCH_ARGS)

bench-dashboard: venv browser ## Benchmark: the dashboard in chromium at 1,000 and 20,000 readings/s, against one glyph per reading
	@$(BIN)/python benchmarks/dashboard.py

# --- AWS ----------------------------------------------------------------------------------------
.PHONY: plan deploy destroy bootstrap-state
bootstrap-state: venv ## Create the Terraform state bucket for ENV and write infra/env/ENV.s3.tfbackend (once per account)
	@bash scripts/deploy.sh bootstrap-state $(ENV)

plan: venv ## terraform plan for ENV (dev by default; ENV=local plans against the emulator on :4566)
	@bash scripts/deploy.sh plan $(ENV)

deploy: venv ## Build and push the image, upload the job, terraform apply, init task, submit the job run (ENV=local: rehearsal)
	@bash scripts/deploy.sh deploy $(ENV)

destroy: venv ## Cancel job runs and wait, stop the EMR application and wait, terraform destroy (ENV=local: rehearsal)
	@bash scripts/deploy.sh destroy $(ENV)
