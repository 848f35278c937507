# Rempart: the two commands of the README, and a few helpers.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench-import clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make demo: start the platform on its embedded PostgreSQL with a synthetic population
demo: install
	$(BIN)/rempart serve --demo

## make test: lint, type-check and run every test
test: install lint typecheck
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

bench-import: install
	$(BIN)/python bench/import.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
