# Thin wrappers; each target is documented in README.md.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
# The interpreter of every target (the local stack, the tests, the benchmarks): Debian's python3.11
# where the machine has one. Debian builds it with profile-guided optimisation and LTO, as the
# images' python is built; a plain pyenv or source build is not, and runs the shop's Python about a
# fifth slower (docs/PERFORMANCE.md, "Sixth pass"). Without it uv finds one as usual
# (.python-version). Another: `make test PYTHON=/path/to/python3.11`; the venv follows it.
PYTHON ?= $(wildcard /usr/bin/python3.11)
ifneq ($(PYTHON),)
export UV_PYTHON := $(PYTHON)
endif
PACKAGES := -p shop_common -p users -p catalog -p orders -p gateway -p shop_dev
TEST_DIRS := libs/common/tests services/users/tests services/catalog/tests services/orders/tests gateway/tests tests bench

.PHONY: setup run seed migrate test containers lint fmt bench bench-issue16

$(UV):
	@echo "uv not found: installing it with pip"
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

setup: | $(UV)  ## install every workspace member and the dev tools from uv.lock
	$(UV) sync --frozen

run: setup  ## the whole stack as local processes (PostgreSQL must be reachable); Ctrl-C stops it
	$(UV) run shop-dev up

seed: setup  ## load the demo catalog into the local database
	$(UV) run shop-dev seed

migrate: setup  ## create database/roles/schemas and migrate every service
	$(UV) run shop-dev migrate

test: setup  ## unit + cross-service tests on real PostgreSQL, PgBouncer and uvicorn (no Docker)
	$(UV) run pytest -m "not docker"

containers: setup  ## tests/containers on a real Docker engine, started if needed (deploy/containers.sh)
	UV=$(UV) bash deploy/containers.sh $(PYTEST_ARGS)

lint: setup  ## ruff, ruff format --check, import contracts, mypy --strict (packages, then each tests dir and bench/ alone)
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run lint-imports  # the contracts in pyproject.toml [tool.importlinter]
	$(UV) run mypy $(PACKAGES)
	@for d in $(TEST_DIRS); do echo "mypy $$d"; $(UV) run mypy $$d || exit 1; done

fmt: setup  ## format and autofix
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

bench: setup  ## load benchmarks (minutes; writes bench/results/)
	$(UV) run python bench/run.py

bench-issue16: setup  ## issue 16's targets side by side with the code it measured (bench/ab.py --issue16; ~7 minutes)
	$(UV) run python bench/ab.py --issue16 --rounds 4
