# One entry point for humans and CI. `make demo` installs everything and runs the support desk;
# `make check` is what CI runs: format check, lint, types, tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo check test lint typecheck install clean

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh "$(VENV)" "$(PY)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.support_desk $(ARGS)

# pre-commit runs ruff format/check, the import-linter layer contracts (pyproject.toml), whitespace,
# TOML and YAML checks on every tracked file, with the tools pinned in .venv (local hooks: no
# network needed).
lint: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pre-commit run --all-files --show-diff-on-failure

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/pytest --cov --cov-report=term $(PYTEST_ARGS)

check: lint typecheck test

clean:
	rm -rf $(VENV) .corral .pytest_cache .mypy_cache .ruff_cache
