PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Each requirement set is installed once, and again when its files change.
RUN_DEPS := $(VENV)/.run-deps
DEV_DEPS := $(VENV)/.dev-deps

.PHONY: run test lint smoke bench clean python-version

# "<version> ok" or "<version> old" for $(PYTHON); empty when it does not run at all.
python_version = $(shell $(PYTHON) -c 'import sys; print("%d.%d.%d %s" % (tuple(sys.version_info[:3]) + ("ok" if sys.version_info >= (3, 11) else "old",)))' 2>/dev/null)

python_refused = $(PYTHON) $(if $(python_version),is Python $(firstword $(python_version)),was not found), but Python 3.11+ is needed; pick another, e.g. make PYTHON=python3.12 $(or $(MAKECMDGOALS),run)

# $(error) rather than a failing command: make then prints this one line and nothing else.
python-version:
	$(if $(filter ok,$(python_version)),,$(error $(python_refused)))

$(BIN)/activate: | python-version
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_DEPS): requirements.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(DEV_DEPS): requirements.txt requirements-dev.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: python-version $(RUN_DEPS)
	$(BIN)/gunicorn --config gunicorn.conf.py wsgi:app

test: python-version $(DEV_DEPS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: python-version $(DEV_DEPS)
	$(BIN)/flake8
	$(BIN)/mypy

smoke: python-version $(RUN_DEPS)
	PYTHON=$(BIN)/python scripts/smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

bench: python-version $(DEV_DEPS)
	$(BIN)/python -m bench.bench_metrics $(BENCH_ARGS)
