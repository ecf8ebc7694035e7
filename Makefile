# One entry point for humans and CI. `make demo` installs everything and runs the support desk;
# `make test` runs the fast tier (under a minute); `make check` is what CI runs: format check,
# lint, types, and both test tiers with coverage.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Workers for the slow tier: its tests mostly wait (subprocesses, browsers, servers), so more
# workers than cores still pays.
WORKERS ?= 4

.PHONY: demo check test test-all lint typecheck install lock clean

$(STAMP): pyproject.toml scripts/install.sh requirements.lock requirements-models.lock
	bash scripts/install.sh "$(VENV)" "$(PY)"
	touch $(STAMP)

install: $(STAMP)

# After changing a dependency in pyproject.toml: re-resolve the hashed lock files that `make
# install` installs from (scripts/lock.sh says what is in them), then commit them.
lock:
	bash scripts/lock.sh "$(VENV)" "$(PY)"

demo: $(STAMP)
	$(BIN)/python -m examples.support_desk $(ARGS)

# pre-commit runs ruff format/check, the import-linter layer contracts (pyproject.toml), whitespace,
# TOML and YAML checks on every tracked file, with the tools pinned in .venv (local hooks: no
# network needed).
lint: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pre-commit run --all-files --show-diff-on-failure

typecheck: $(STAMP)
	$(BIN)/mypy

# The fast tier: unit tests on fakes, one process, no network, subprocesses, browsers or real
# sleeps (tests/tiers.py enforces it).
test: $(STAMP)
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

# Both tiers with branch coverage, added up before the floor in pyproject.toml is checked: the
# fast tier in one process, then the slow tier on pytest-xdist workers. `--dist loadgroup` keeps
# each `xdist_group` on one worker: DBOS allows one database per process, so the tests that
# launch it in process share the `dbos` group.
test-all: $(STAMP)
	$(BIN)/pytest -m "not slow" --cov --cov-report= --cov-fail-under=0 $(PYTEST_ARGS)
	$(BIN)/pytest -m slow -n $(WORKERS) --dist loadgroup --cov --cov-append --cov-report=term \
		$(PYTEST_ARGS)

check: lint typecheck test-all

clean:
	rm -rf $(VENV) .corral .pytest_cache .mypy_cache .ruff_cache
