# pneumo: `make run` (the whole demo) and `make test` (all tests) are the two commands to know.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: help venv run test test-fast lint format stack-up stack-down stack-status repro bench quality clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

venv: $(VENV)/.installed  ## Create .venv with the pinned requirements

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

run: venv  ## Start the stack, train on synthetic data, keep serving until Ctrl-C
	$(BIN)/pneumo run

test: venv  ## All tests (starts its own stack on other ports)
	$(BIN)/pytest

test-fast: venv  ## Unit tests only, no servers
	$(BIN)/pytest -m "not integration and not slow"

lint: venv  ## ruff and hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

format: venv  ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

stack-up: venv  ## Start S3, MLflow and Prefect in the background
	$(BIN)/pneumo stack up

stack-down: venv  ## Stop what stack-up started
	$(BIN)/pneumo stack down

stack-status: venv  ## Show the services and their health
	$(BIN)/pneumo stack status

repro: venv  ## The same pipeline as DVC stages: dvc repro (needs the stack up)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

bench: venv  ## Benchmarks (print numbers; see benchmarks/)
	$(BIN)/python benchmarks/training.py

quality: venv  ## Cross-validate the xray recipe on real X-rays: make quality DATA=path/to/labelled/folder
	@test -n "$(DATA)" || { echo "usage: make quality DATA=path/to/labelled/folder"; exit 2; }
	$(BIN)/python benchmarks/quality.py --data "$(DATA)"

clean:  ## Remove local state (stops nothing: run stack-down first)
	rm -rf .pneumo data/processed data/external .pytest_cache
