# The two commands: `make dev` runs the whole stack, `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
INSTALLED := $(VENV)/.installed
# uv itself comes from PyPI at this version; pyproject's dev group pins the same one, so the lock
# keeps it in the venv (tests/test_bootstrap.py checks that the two agree).
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv

.PHONY: dev test test-fast install clean bench bench-api bench-events

install: $(INSTALLED)

# Exactly what uv.lock says: the project (editable) and the dev group; pip is only used, once, to get uv.
# Remade when the lock or pyproject.toml change (`uv lock` after editing the dependencies).
$(INSTALLED): uv.lock pyproject.toml
	test -x $(UV) || { $(PYTHON) -m venv $(VENV) && $(VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION); }
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen
	touch $@

dev: $(INSTALLED)
	$(VENV)/bin/python -m dev.stack

# The gates, then the whole suite; one checker a line.
test: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest

# The same gates, then only the tests that start no servers (not marked `stack`): the sub-minute loop.
test-fast: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -m "not stack"

# Issue 13's table on a stack of its own (needs Debian's wrk; make test does not); BENCH_ARGS="--onboard 20" etc.
bench: $(INSTALLED)
	$(VENV)/bin/python -m scripts.bench $(BENCH_ARGS)

# Load-tests webhook intake and the customer(id) read on a stack of its own; BENCH_ARGS="-n 500 -c 8" etc.
bench-api: $(INSTALLED)
	$(VENV)/bin/python -m scripts.bench_api --start-stack $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .data test-artifacts

# Lag from a lifecycle change to its webhook delivery with N customers onboarding at once; BENCH_ARGS="-n 50".
bench-events: $(INSTALLED)
	$(VENV)/bin/python -m scripts.bench_events $(BENCH_ARGS)
