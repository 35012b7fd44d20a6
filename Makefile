# Two commands set everything up: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# Bytecode compiled ahead: with PYTHONDONTWRITEBYTECODE set, every run would otherwise compile the
# package's edited modules again (about 20 ms of each start-up), which an installed soartc never does.
BYTECODE := $(BIN)/python -m compileall -q soartc_cli

.PHONY: demo test lint bench clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	$(BYTECODE)
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]'
	$(BYTECODE)
	@touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/soartc compute sample_images/

# The report's browser test (tests/test_report.py) renders a report in headless Chromium. A fresh
# CI machine gets Debian's package here when it can (root with apt-get); elsewhere that test skips
# with one line saying how to install it.
chromium:
	@have() { command -v "$$1" >/dev/null 2>&1; }; \
	if have chromium || have chromium-browser || have google-chrome; then :; \
	elif [ "$$(id -u)" = 0 ] && have apt-get; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else echo "chromium missing, and not root with apt-get: the browser test will skip" >&2; fi

# pytest exits 5 when it collects no test, which fails make: an empty run is never a pass.
test: $(VENV)/.installed-test chromium
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check soartc_cli tests benchmarks
	$(BIN)/ruff format --check soartc_cli tests benchmarks

# BENCH_ARGS=--quick for a fast sanity run; figures also go to benchmarks/out/last.json.
bench: $(VENV)/.installed-test
	$(BYTECODE)
	$(BIN)/python benchmarks/bench_pipeline.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
