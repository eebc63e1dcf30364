# pneumo: `make run` (the whole demo) and `make test` (all tests) are the two commands to know.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: help venv run test test-suite test-postgres test-image test-fast image lint format stack-up stack-down \
	stack-status repro bench quality clean
IMAGE ?= localhost/pneumo:latest
BASE_IMAGE ?= localhost/pneumo-base:bookworm

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

venv: $(VENV)/.installed  ## Create .venv with the pinned requirements

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

run: venv  ## Start the stack, train on synthetic data, keep serving until Ctrl-C
	$(BIN)/pneumo run

test: venv  ## All tests: the suite on 2 workers, with its Postgres scenarios and the image alongside
	BIN=$(BIN) IMAGE=$(IMAGE) BASE_IMAGE=$(BASE_IMAGE) tests/run-all

test-suite: venv  ## The suite alone, on 2 workers (each starts its own stack on other ports; SQLite stores)
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder

# The scenarios again with MLflow, Prefect and the records on a PostgreSQL server of the test stack
# (training and monitoring deployments through a worker, two API replicas, drift to retraining),
# and the image (built first, or found built) serving that stack's champion.
test-postgres: venv  ## Training, serving and monitoring scenarios on PostgreSQL, and the image
	PNEUMO_TEST_DB=postgres $(BIN)/pytest -m postgres

test-image: venv  ## The built image's default command against a test stack: /health, /ready, a prediction
	$(BIN)/pytest -m image tests/test_image.py

image:  ## Build the Dockerfile with buildah into $(IMAGE) (base: a debootstrapped bookworm)
	deploy/build-image.sh $(IMAGE) $(BASE_IMAGE)

test-fast: venv  ## The tests that need no server (about a minute): the edit-test loop
	$(BIN)/pytest -n 2 -m "not integration and not slow"

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
