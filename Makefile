# The two commands: `make run` and `make test`. Both create .venv when missing and install exactly
# the locked set (uv.lock, every package pinned with hashes); a .venv made from an older lock is
# re-synced, never reused as it is.
#
# uv itself is the one tool installed with pip, from requirements/uv.txt (pinned with hashes) into
# .tools/; it then builds .venv from uv.lock with the machine's python3 (it never downloads Python).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools
UV := $(TOOLS)/bin/uv
PYTEST_ARGS ?=
ARGS ?=

export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# The tests that build the wheel use the same uv.
export SPIRL_UV := $(abspath $(UV))

.PHONY: run test install sync lock check-lock test-latest lint typecheck bench clean

$(UV): requirements/uv.txt
	$(PYTHON) -m venv $(TOOLS)
	PIP_CONFIG_FILE=/dev/null $(TOOLS)/bin/pip install -q --disable-pip-version-check \
		--require-hashes --no-deps -r requirements/uv.txt
	touch $(UV)

# Fails with a clear message when pyproject.toml changed without `make lock`.
check-lock: $(UV)
	@$(UV) lock --check --quiet || { \
		echo "uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock" >&2; \
		exit 1; }

# Cheap when nothing changed (uv compares the environment with the lock); always run, so a stale
# .venv is brought back to the lock.
sync: check-lock
	$(UV) sync --locked --extra dev --quiet

install: sync

run: sync
	$(BIN)/python -m controlplane.demo $(ARGS)

test: sync
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# Refresh the lock to the newest versions pyproject.toml allows (then run `make test` and commit).
lock: $(UV)
	$(UV) lock --upgrade

# Not in CI: the suite against the newest releases pyproject.toml allows, in a separate .venv-latest,
# so a release that would break a fresh install is seen before `make lock` takes it.
test-latest: $(UV)
	$(UV) venv --quiet --allow-existing .venv-latest
	VIRTUAL_ENV=.venv-latest $(UV) pip install --quiet --upgrade --refresh -e '.[dev]'
	VIRTUAL_ENV=.venv-latest $(UV) pip list --format freeze --quiet > .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: sync
	$(BIN)/ruff check controlplane tests benchmarks
	$(BIN)/ruff format --check controlplane tests benchmarks

typecheck: sync
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .venv-latest $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
