# One command each on a fresh machine: `make demo`, `make test`, `make dev`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOME_DIR := $(CURDIR)/.selfheal/dagster_home

.PHONY: install demo test test-fast lint format dev bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/selfheal demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The whole suite on 6 workers (2 cores: the daemon tests mostly wait), a file per worker at a
# time; each long test starts at once on a worker of its own (see conftest.py).
test: lint
	$(BIN)/python -m pytest -n 6 --dist loadfile --no-loadscope-reorder

# After every change: the pure core, registry, checks, planner, SQL and assets on DuckDB
# (no server, browser or daemon); `make test` before you push.
test-fast: install
	$(BIN)/python -m pytest -m fast -q --durations=5

$(HOME_DIR)/dagster.yaml: | install
	env -u DAGSTER_HOME $(BIN)/python -c "from selfheal_dagster import runs; runs.instance()"

# Dagster's `dg dev` reads the project from pyproject.toml ([tool.dg]); the project's instance.
dev: install $(HOME_DIR)/dagster.yaml
	DAGSTER_HOME=$(HOME_DIR) VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(BIN):$$PATH \
		$(BIN)/dg dev --host 127.0.0.1 --port 3000

bench: install
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .selfheal .pytest_cache .ruff_cache *.egg-info
