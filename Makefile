# The two commands: `make dev` runs the whole stack, `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: dev test install clean bench-api

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(INSTALLED)

dev: $(INSTALLED)
	$(VENV)/bin/python -m dev.stack

test: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

# Load-tests webhook intake and the customer(id) read on a stack of its own; BENCH_ARGS="-n 500 -c 8" etc.
bench-api: $(INSTALLED)
	$(VENV)/bin/python scripts/bench_api.py --start-stack $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .data test-artifacts
