# Two entry points, both idempotent on a fresh machine: `make demo` and `make test`.
# `make demo` installs only what the demo needs; `make test` adds the test extras on top. Each level
# has its own stamp file, and both are redone whenever pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(VENV)/.installed-demo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[demo]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-demo
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

.PHONY: install demo test bench
install: $(VENV)/.installed-test

demo: $(VENV)/.installed-demo
	$(BIN)/lingua2-batch demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q --durations=15

bench: $(VENV)/.installed-test
	$(BIN)/lingua2-batch bench --size small
	$(BIN)/lingua2-batch bench --size bert-base --documents 12
