# Hub on Demand — developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Tests run in parallel processes; each gets its own database and namespaces.
TEST_WORKERS ?= 2
PYTEST_ARGS ?=
# Tests use the local PostgreSQL (scripts/services.sh) over its Unix socket, as the login user.
TEST_DATABASE_URL ?= postgres://%2Fvar%2Frun%2Fpostgresql/hubondemand
# Checks and tests run with a throwaway key; the portal itself refuses to start without one.
throwaway_key = $(shell $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')

.PHONY: help install system-packages up test test-realnode test-chart lint format cluster cluster-down cluster-status helm services services-down bench-cluster bench-reconcile bench-usage bench-api bench-provision bench-quickstart

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# Python dependencies: all that the portal, the checks and the benchmarks need.
$(BIN)/.python-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Plus the npm packages of the test suite: configurable-http-proxy for the real JupyterHub test
# (node_modules/.bin). Only `make test` and `make install` need Node.js.
$(BIN)/.installed: $(BIN)/.python-installed package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(BIN)/.installed ## Create .venv and node_modules with the pinned dependencies

up: $(BIN)/.python-installed ## Quick start: portal, worker, beat, Redis and the local cluster on this machine
	bash scripts/system-packages.sh up
	bash scripts/dev-up.sh

test: export SECRET_KEY ?= $(throwaway_key)
test: export DATABASE_URL ?= $(TEST_DATABASE_URL)
test: system-packages $(BIN)/.installed services ## Run the whole test suite (starts the local cluster if none runs)
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not faults$(if $(filter real,$(NODE)),, and not realnode)" $(PYTEST_ARGS)
	@# Fault injection stops shared services (kube-apiserver, workers): alone, afterwards.
	$(BIN)/pytest -m faults $(PYTEST_ARGS)

# The real node's tests alone, with the node started (built first if the cache lacks it). One
# process: the tests share the one node, and a second worker would start it a second time.
test-realnode: export SECRET_KEY ?= $(throwaway_key)
test-realnode: export DATABASE_URL ?= $(TEST_DATABASE_URL)
test-realnode: export DEVCLUSTER_NODE = real
test-realnode: system-packages $(BIN)/.installed services ## Run the real node's tests (builds and starts the node if needed)
	$(BIN)/pytest -m "realnode and not faults" $(PYTEST_ARGS)

test-chart: export SECRET_KEY ?= $(throwaway_key)
test-chart: $(BIN)/.python-installed ## The Helm chart's tests: lint, render, dry-run, install into the local cluster
	$(BIN)/pytest -n $(TEST_WORKERS) tests/chart $(PYTEST_ARGS)

lint: export SECRET_KEY ?= $(throwaway_key)
lint: $(BIN)/.python-installed ## ruff, import contracts (portal -> provisioning only), migrations check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python manage.py makemigrations --check --dry-run

format: $(BIN)/.python-installed ## Format and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# NODE=real adds a real node (kubelet, containerd, runc) beside the simulated ones; see README.
NODE ?= $(DEVCLUSTER_NODE)
cluster: ## Build (once) and start the local Kubernetes control plane (NODE=real: and a real node)
	DEVCLUSTER_NODE=$(NODE) bash devcluster/scripts/up.sh

cluster-down: ## Stop the local control plane and remove its state
	bash devcluster/scripts/down.sh

cluster-status: ## Show what parts of the local control plane run
	bash devcluster/scripts/status.sh

helm: ## Build (once) the pinned helm from Go modules and print its path
	@bash devcluster/scripts/build.sh helm >&2
	@bash -c 'source devcluster/scripts/common.sh && echo "$$(helm_bin_dir)/helm"'

system-packages: ## Install the Debian packages the tests need (as root; else prints the command)
	bash scripts/system-packages.sh test

services: ## Start local PostgreSQL and Redis (Debian packages)
	bash scripts/services.sh start redis postgres

services-down: ## Stop local PostgreSQL and Redis
	bash scripts/services.sh stop redis postgres

bench-cluster: $(BIN)/.python-installed ## Measure cluster start-up (cached) and Deployment-to-Ready time
	$(BIN)/python benchmarks/devcluster.py

bench-reconcile: $(BIN)/.python-installed ## Time reconcile passes over 100 and 1,000 hubs
	$(BIN)/python benchmarks/reconcile.py

bench-usage: $(BIN)/.python-installed ## Time usage passes over 1,000 hubs x 20 pods and a 90-day query
	$(BIN)/python benchmarks/usage.py

bench-provision: export DATABASE_URL ?= $(TEST_DATABASE_URL)
bench-provision: $(BIN)/.python-installed services ## 100 hubs approved at once until running, 50 API readers, vs kubectl apply
	$(BIN)/python benchmarks/provision.py

bench-quickstart: $(BIN)/.python-installed ## Against a running make up: 100 hub requests with 50 API readers
	$(BIN)/python benchmarks/quickstart.py

bench-api: export DATABASE_URL ?= $(TEST_DATABASE_URL)
bench-api: $(BIN)/.python-installed services ## p50, p95 and req/s of the hub list, a detail and a write under gunicorn
	$(BIN)/python benchmarks/api.py
