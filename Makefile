# `make run` trains, evaluates and pushes a model on generated sample data; `make test` runs the tests.
# Both (re)create .venv with Python 3.10 when it is missing or the lock changed.
PYTHON310 ?= $(or $(shell command -v python3.10 2>/dev/null),$(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.10.13/bin/python3.10)
VENV := .venv
BIN := $(VENV)/bin
LOCK_STAMP := $(VENV)/.lock-installed
PROJECT_STAMP := $(VENV)/.project-installed

.PHONY: run test venv clean

venv: $(PROJECT_STAMP)

$(LOCK_STAMP): requirements.lock
	rm -rf $(VENV)
	$(PYTHON310) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	touch $@

$(PROJECT_STAMP): $(LOCK_STAMP) setup.py
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

run: $(PROJECT_STAMP)
	$(BIN)/mtmoe run $(ARGS)

test: $(PROJECT_STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) mtmoe_work
