# The two commands of the README: `make demo` and `make test`. Everything else serves them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test install install-test services-prepare services-up services-down bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## Run the simulated bot with every feature on and embedded defaults (no service needed).
demo: install
	$(BIN)/opsstack demo $(DEMO_ARGS)

## Install what the tests need, start the real services on loopback, run the whole suite.
test: install-test services-prepare
	$(BIN)/python -m pytest $(PYTEST_ARGS)

services-prepare: install-test
	$(BIN)/python -m tests.harness prepare

services-up: services-prepare
	$(BIN)/python -m tests.harness up

services-down:
	$(BIN)/python -m tests.harness down

bench: install-test
	for script in bench/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .services
