# alertfeed: every workflow goes through these targets (CI, the README and people alike).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV       := .venv
PY         := $(VENV)/bin/python
ALERTFEED  := $(VENV)/bin/alertfeed
STATE_DIR  := .local
KAFKA_PORT ?= 9092
REDIS_PORT ?= 6379
STACK      := $(PY) deploy/local/localstack.py --state-dir $(STATE_DIR)
STAMP      := $(VENV)/.installed
# The worker and tools read their connections from here; `make up` starts these services.
export ALERTFEED_KAFKA__URL ?= kafka://127.0.0.1:$(KAFKA_PORT)
export ALERTFEED_REDIS__URL ?= redis://127.0.0.1:$(REDIS_PORT)/0

.PHONY: help install up down demo test test-unit lint format bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install alertfeed (editable) with the dev extras

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

up: install ## start local Kafka (KRaft, jars via Maven) and Redis on 127.0.0.1, create the topics
	$(STACK) up --kafka-port $(KAFKA_PORT) --redis-port $(REDIS_PORT)
	$(ALERTFEED) topics

down: ## stop the local Kafka and Redis
	@test -x $(PY) && $(STACK) down || true

demo: up ## run the pipeline on a sample: an AMBER alert and a crowd of synthetic users
	$(ALERTFEED) demo; status=$$?; $(MAKE) --no-print-directory down; exit $$status

test: install ## run every test against a real Kafka broker and Redis server
	$(PY) -m pytest -q

test-unit: install ## only the tests that need no broker or Redis
	$(PY) -m pytest -q -m "not integration"

lint: install ## ruff format --check, ruff check, mypy --strict
	$(VENV)/bin/ruff format --check pipeline tests deploy
	$(VENV)/bin/ruff check pipeline tests deploy
	$(VENV)/bin/mypy

format: install ## apply ruff format and safe fixes
	$(VENV)/bin/ruff format pipeline tests deploy
	$(VENV)/bin/ruff check --fix pipeline tests deploy

bench: install ## benchmarks, each figure beside a same-run baseline, as a ratio
	$(PY) tests/bench/run.py $(BENCH_ARGS)

clean: down ## remove the venv and local state
	rm -rf $(VENV) $(STATE_DIR) .alertfeed-data
