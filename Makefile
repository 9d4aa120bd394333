# The two commands of the README: `make demo` and `make test`. Everything else serves them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test install install-test services-prepare services-up services-down bench rehearsal clean runbook-base

# Where alert notifications link to: docs/runbook.md as a reader's browser reaches it (your copy).
RUNBOOK_BASE ?= https://github.com/opsstack/opsstack/blob/main/docs/runbook.md

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Every extra: `make demo` pointed at the services (make services-up) ships logs and spans.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all]'
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

## Every benchmark of bench/, one after another; the output also goes to bench/results/bench-<time>.txt.
bench: install-test
	bench/run_all.sh $(BIN)/python

## The production rehearsal (issue 18): the installed wheel as the bot under load and faults for
## REHEARSAL_MINUTES (default 60); the report goes to bench/results/. Needs root (a tmpfs).
REHEARSAL_MINUTES ?= 60
rehearsal: install-test services-prepare
	$(BIN)/python -m tests.rehearsal --minutes $(REHEARSAL_MINUTES) --out bench/results

clean:
	rm -rf $(VENV) .pytest_cache .services

## Point every alert's runbook_url (alert_rules/*.yml and their unit tests) at RUNBOOK_BASE.
runbook-base:
	@current=$$(sed -n 's/^ *runbook_url: \([^#]*\)#.*/\1/p' alert_rules/*.yml | sort -u); \
	test "$$(printf '%s\n' "$$current" | wc -l)" -eq 1 || { echo "runbook_url bases differ: $$current" >&2; exit 1; }; \
	sed -i "s|runbook_url: $$current#|runbook_url: $(RUNBOOK_BASE)#|" alert_rules/*.yml alert_rules/tests/*.yml; \
	echo "runbook_url: $$current -> $(RUNBOOK_BASE)"
