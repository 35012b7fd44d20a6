# Two commands set everything up: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	$(BIN)/python -m compileall -q soartc_cli
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]'
	$(BIN)/python -m compileall -q soartc_cli
	@touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/soartc compute sample_images/

# pytest exits 5 when it collects no test, which fails make: an empty run is never a pass.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check soartc_cli tests benchmarks
	$(BIN)/ruff format --check soartc_cli tests benchmarks

# BENCH_ARGS=--quick for a fast sanity run; figures also go to benchmarks/out/last.json.
# compileall first: with PYTHONDONTWRITEBYTECODE set, every run would compile the edited modules
# again (about 20 ms of each start-up), which is not what an installed soartc does.
bench: $(VENV)/.installed-test
	$(BIN)/python -m compileall -q soartc_cli
	$(BIN)/python benchmarks/bench_pipeline.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
