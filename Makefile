PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint smoke bench clean

$(BIN)/activate: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(BIN)/activate

run: $(BIN)/activate
	$(BIN)/gunicorn --config gunicorn.conf.py wsgi:app

test: $(BIN)/activate
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/activate
	$(BIN)/flake8

smoke: $(BIN)/activate
	PYTHON=$(BIN)/python scripts/smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

bench: $(BIN)/activate
	$(BIN)/python -m bench.bench_metrics $(BENCH_ARGS)
