# Airloop developer commands. Everything runs from .venv, installed from requirements.lock.
SHELL := /bin/bash
PYTHON ?= python3.11
UV_VERSION := 0.13.9
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin

# The embedded runtime: all state under AIRLOOP_HOME, Airflow on SQLite with LocalExecutor.
export AIRLOOP_HOME ?= $(CURDIR)/.airloop
export AIRFLOW_HOME ?= $(AIRLOOP_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export AIRFLOW__CORE__EXECUTOR ?= LocalExecutor
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN ?= sqlite:///$(AIRFLOW_HOME)/airflow.db
export AIRFLOW__API__PORT ?= 8080
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL ?= http://127.0.0.1:$(AIRFLOW__API__PORT)/execution/
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS ?= admin:admin
export BENTOML_DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
MLFLOW_PORT ?= 5000

.PHONY: help install system-deps lock demo test test-fast up bench lint clean

help:
	@echo "make demo   - install, then run Airloop's main job on the embedded default"
	@echo "make test   - install, then run the whole test suite"
	@echo "make up     - Airflow UI + MLflow UI locally (no Docker)"
	@echo "make compose-test - docker-compose up of the real compose file on podman (slow; not in make test)"
	@echo "make bench  - every benchmark next to its baseline: table of ratios, report + plots under $(AIRLOOP_HOME)/bench (BENCH_ARGS=--quick: smaller)"
	@echo "make clean  - remove $(AIRLOOP_HOME) (all local state)"

install: $(VENV)/.installed system-deps

# Debian packages the tests use: docker-compose validates the compose file without an engine;
# chromium (with a font for its text) is the browser PyPI playwright drives in the UI tests, as
# Playwright cannot download its own browsers here. Only missing ones are installed.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_PACKAGES := docker-compose chromium fonts-liberation
system-deps:
	@missing="$$(for pkg in $(SYSTEM_PACKAGES); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$pkg 2>/dev/null)" = installed ] || echo $$pkg; done)"; \
	[ -z "$$missing" ] || { \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; }

# Bytecode is compiled once, here: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every
# process would compile every module it imports, about half the cost of starting Airflow.
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: Airloop needs CPython 3.11" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode -r requirements-dev.txt -c requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

# Re-pin requirements.lock after editing requirements*.txt (keeps existing pins where possible).
lock: $(VENV)/.installed
	$(BIN)/uv pip compile requirements-dev.txt -o requirements.lock --python-version 3.11

demo: install
	$(BIN)/python -m airloop.demo

# One pytest worker per core; a module's tests stay on one worker (see tests/conftest.py).
TEST_WORKERS ?= auto
PARALLEL := --numprocesses $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test: install
	$(BIN)/python -m pytest -q $(PARALLEL) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not slow and not services" $(PYTEST_ARGS)

up: install
	mkdir -p $(AIRFLOW_HOME)
	@echo "Airflow UI: http://127.0.0.1:$(AIRFLOW__API__PORT)  (login admin; password in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated)"
	@echo "MLflow UI:  http://127.0.0.1:$(MLFLOW_PORT)"
	trap 'kill 0' EXIT; \
	PATH=$(BIN):$$PATH $(BIN)/python -m airloop.cli mlflow-ui --port $(MLFLOW_PORT) & \
	PATH=$(BIN):$$PATH $(BIN)/airflow standalone

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: install
	$(BIN)/python -m pytest -q tests/dags

clean:
	rm -rf $(AIRLOOP_HOME)

# The compose stack without Docker: the same services, commands and environment as native
# processes (tests/stack/native.py), on fresh Postgres databases; Ctrl-C stops and cleans up.
.PHONY: stack
stack: install
	$(BIN)/python tests/stack/native.py

# `docker-compose up` of the real compose file on podman, with images built here from Debian
# packages and the lock (tests/stack/compose_run.py; docker/local-base/build.sh). Not part of
# `make test`: a cold run builds images for many minutes. COMPOSE_TEST_ARGS=--cold empties the
# caches first; --keep leaves the stack up (take it down with COMPOSE_TEST_ARGS=--down).
COMPOSE_TEST_PACKAGES := podman runc debootstrap docker-compose
.PHONY: compose-test
compose-test: install
	@missing="$$(for pkg in $(COMPOSE_TEST_PACKAGES); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$pkg 2>/dev/null)" = installed ] || echo $$pkg; done)"; \
	[ -z "$$missing" ] || { \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; }
	$(BIN)/python tests/stack/compose_run.py $(COMPOSE_TEST_ARGS)
