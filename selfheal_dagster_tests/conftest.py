"""Shared fixtures: a real DuckDB file and a real Dagster instance per test, no network."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.defs_state.base import DefsStateStorage

from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_SEED
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse

# A mid-season Tuesday of the 2025-26 season with games on it and around it.
GAME_DAY = date(2026, 1, 20)
ALL_STAR_SUNDAY = date(2026, 2, 15)

# Every wait in a test is a bound a slow, loaded 2-core machine meets, never a speed check;
# SELFHEAL_TEST_WAIT_SCALE multiplies them all for a machine slower still.
WAIT_SCALE = float(os.environ.get("SELFHEAL_TEST_WAIT_SCALE", "1"))


def bound(seconds: float) -> float:
    """A generous wait, scaled by ``SELFHEAL_TEST_WAIT_SCALE``."""
    return seconds * WAIT_SCALE


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse", action="store_true", help="run the tests in reverse order (order checks)"
    )


# The suite's four layers (the style guide's), by module: ``pytest -m unit`` and friends.
# ``fast`` is what ``make test-fast`` runs after every change: the pure core, the registry,
# checks, planner, SQL and the assets against DuckDB, with no server, browser or daemon.
LAYERS = {
    "unit": (
        "test_healing",
        "test_planner",
        "test_tables",
        "test_layers",
        "test_league",
        "test_checks",
        "test_phase4_sql",
        "test_warehouse",
        "test_private_api",
    ),
    "assets": (
        "test_assets",
        "test_ranges",
        "test_bigquery",
        "test_bigquery_double",
        "test_zetasql",
        "test_services",
        "test_prod",
        "test_graph_snapshot",
        "test_definitions",
        "test_isolation",
    ),
    "sensors": (
        "test_heal_sensor",
        "test_alerts",
        "test_history",
        "test_one_heal_path",
        "test_doubled_loads",
        "test_sweep",
        "test_orphans",
    ),
    "e2e": (
        "test_cli",
        "test_doctor",
        "test_dg",
        "test_ui",
        "test_postgres",
        "test_daemon_guarantees",
        "test_daemon_crash",
        "test_prod_heal",
    ),
}
FAST = (*LAYERS["unit"], "test_assets")
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its layer (and ``fast``); a module in no layer is an error, so a
    new test module says where it belongs."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module not in LAYER_OF:
            raise pytest.UsageError(f"{module}: add it to a layer in conftest.LAYERS")
        item.add_marker(getattr(pytest.mark, LAYER_OF[module]))
        if module in FAST:
            item.add_marker(pytest.mark.fast)
    if config.getoption("--reverse"):
        items.reverse()


@pytest.fixture(autouse=True)
def no_leaked_load_state() -> Iterator[None]:
    """Fail the test that leaves Dagster's context-local defs-state storage set once its
    instances are closed: a later test would resolve definitions against a dead instance
    (an order-dependent failure), so catch it in the test that causes it."""
    yield
    leaked = DefsStateStorage.get()
    assert leaked is None, f"a closed instance's defs-state storage is still current: {leaked}"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean local environment: warehouse and Dagster home inside tmp_path."""
    for name in (
        "SELFHEAL_ENV",
        "SELFHEAL_LEAGUE_OUTAGES",
        "SELFHEAL_LEAGUE_SEED",
        "SELFHEAL_SEASON",
        "SLACK_WEBHOOK_URL",
        "SLACK_BOT_TOKEN",
        "SLACK_CHANNEL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SELFHEAL_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    return tmp_path


@pytest.fixture
def warehouse(env: Path) -> DuckDBWarehouse:
    return DuckDBWarehouse(env / "warehouse.duckdb")


@pytest.fixture
def league() -> League:
    return League(DEFAULT_SEED)


@pytest.fixture
def instance(env: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def defs(env: Path) -> dg.Definitions:
    """The full code location, loaded fresh so it reads this test's environment."""
    from selfheal_dagster.definitions import defs as load

    return load()


def load_phase2(warehouse: DuckDBWarehouse, league: League, start: date, end: date) -> None:
    """Fill Phase 2 straight from the league (no Dagster) to give Phase 4 its history."""
    from selfheal_dagster.tables import in_phase

    day = start
    while day <= end:
        for table in in_phase(2):
            warehouse.replace_partition(table, day, league.feed(table.feed, day))
        day += timedelta(days=1)


@pytest.fixture(scope="session")
def history_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse with Phase 2 for the 31 days before GAME_DAY through the day after it."""
    path = tmp_path_factory.mktemp("history") / "warehouse.duckdb"
    load_phase2(
        DuckDBWarehouse(path),
        League(DEFAULT_SEED),
        GAME_DAY - timedelta(days=31),
        GAME_DAY + timedelta(days=1),
    )
    return path


@pytest.fixture
def history(env: Path, history_file: Path) -> DuckDBWarehouse:
    """This test's own copy of the Phase 2 history, at SELFHEAL_DUCKDB_PATH."""
    target = env / "warehouse.duckdb"
    shutil.copy(history_file, target)
    return DuckDBWarehouse(target)


def set_loaded_at(wh: DuckDBWarehouse, table, day: date, when) -> None:
    """Pretend a partition was written at ``when`` (tests of deadlines and staleness)."""
    import duckdb

    con = duckdb.connect(wh.path)
    try:
        con.execute(
            f"UPDATE {wh.ref(table)} SET _loaded_at = ? WHERE {table.partition_column} = ?",
            [when.astimezone(UTC).replace(tzinfo=None), day],
        )
    finally:
        con.close()


def calendar(league: League):
    return lambda day: len(league.games_on(day))


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (see postgres.py), always stopped."""
    from selfheal_dagster_tests.postgres import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_instance(env, postgres, tmp_path, monkeypatch):
    """The production instance: deploy/dagster.yaml as shipped, on its own Postgres database."""
    from selfheal_dagster_tests.postgres import production_home

    home, pg_env = production_home(tmp_path, postgres)
    for key, value in pg_env.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


ZETASQL_CACHE = Path(__file__).resolve().parents[1] / ".selfheal" / "zetasql"


@pytest.fixture(scope="session")
def zetasql():
    """BigQuery's SQL front end (ZetaSQL, WebAssembly): compiled once into a cache the tests
    own (``.selfheal/zetasql``, about 30 s), loaded from it in about a second after that.
    Skipped with a reason where the package is missing; under CI a missing one fails."""
    try:
        from selfheal_dagster_tests.zetasql_engine import ZetaSQL
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"zetasql is not installed (a dev dependency): {exc}")
        pytest.skip(f"zetasql is not installed (pip install -e '.[dev]'): {exc}")
    return ZetaSQL(ZETASQL_CACHE)


BQ_PROJECT = "nba-props-prod"
BQ_LOCATION = "EU"
_ZETA_TYPES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


def zeta_params(types: dict[str, str]) -> dict:
    """Query parameter types as the double reads them off a job (``DATE``, ``INTEGER``,
    ``ARRAY<DATE>``…), as ZetaSQL types."""
    from selfheal_dagster_tests.zetasql_engine import array, scalar

    def one(kind: str):
        return scalar(_ZETA_TYPES.get(kind, kind))

    return {
        name: array(_ZETA_TYPES.get(k[6:-1], k[6:-1])) if k.startswith("ARRAY<") else one(k)
        for name, k in types.items()
    }


class ZetaSQLAnalyser:
    """The strict BigQuery double's analyser: each statement it receives, analysed by
    ZetaSQL against the double's own catalog with the job's parameter types (a statement
    already analysed with the same types is not analysed again). ``kinds``: the resolved
    kinds of statement seen; ``count``: statements analysed."""

    def __init__(self, zetasql) -> None:
        self.zetasql = zetasql
        self.kinds: set[str] = set()
        self.count = 0
        self._seen: set[tuple[str, tuple]] = set()
        self._lock = threading.Lock()  # one WebAssembly instance: one call at a time

    def __call__(self, sql, catalog, types) -> None:
        with self._lock:
            self._analyse(sql, catalog, types)

    def _analyse(self, sql, catalog, types) -> None:
        from selfheal_dagster_tests.zetasql_engine import Table

        key = (sql, tuple(sorted(types.items())))
        if key in self._seen:
            return
        tables = [
            Table(name, tuple((c, _ZETA_TYPES.get(k, k)) for c, k in columns))
            for name, columns in catalog
        ]
        found = self.zetasql.analyze_script(sql, tables, zeta_params(types))
        self.kinds |= {kind for kind, _ in found}
        self.count += len(found)
        self._seen.add(key)


def zetasql_analyser(zetasql) -> ZetaSQLAnalyser:
    return ZetaSQLAnalyser(zetasql)


@contextmanager
def bigquery_double(key_dir: Path, zetasql, **options) -> Iterator:
    """The strict BigQuery double on 127.0.0.1, with a service-account key whose token
    endpoint it is, reached by the real client (``BIGQUERY_EMULATOR_HOST``); every statement
    it receives is analysed by ZetaSQL."""
    import json

    from selfheal_dagster_tests.bigquery_double import BigQueryDouble, service_account_key

    double = BigQueryDouble(BQ_PROJECT, BQ_LOCATION, analyser=zetasql_analyser(zetasql), **options)
    with double.serve(), pytest.MonkeyPatch.context() as patch:
        key = key_dir / "service-account.json"
        key.write_text(json.dumps(service_account_key(double.url, BQ_PROJECT)))
        patch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
        patch.setenv("BIGQUERY_EMULATOR_HOST", double.url)
        yield double


@pytest.fixture
def bigquery(tmp_path: Path, zetasql):
    """The strict BigQuery double for one test (see ``bigquery_double``)."""
    with bigquery_double(tmp_path, zetasql) as double:
        yield double


PROD_RUN_ID = "5f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
PROD_CID = "a1b2c3d4-0000-4000-8000-000000000000"


@pytest.fixture(scope="session")
def prod_day(tmp_path_factory, zetasql):
    """A day of production work (``prod_scenario.run``) against one strict double, every
    statement analysed by ZetaSQL; its jobs labelled as a heal run's would be. Shared: the
    tests read what the double received and holds, and change nothing."""
    from selfheal_dagster.adapters.league import League
    from selfheal_dagster_tests import prod_scenario

    with bigquery_double(tmp_path_factory.mktemp("bq-day"), zetasql) as double:
        job = {"asset": "x", "run_id": PROD_RUN_ID, "correlation_id": PROD_CID, "attempt": 2}
        with bigquery_warehouse("asset", **job) as wh:
            prod_scenario.run(wh, League(DEFAULT_SEED))
        yield double


def bigquery_warehouse(component: str = "cli", **job):
    """The production warehouse against the double (labels from a job context)."""
    from selfheal_dagster.core.job_context import JobContext
    from selfheal_dagster.defs.resources import BigQueryWarehouseResource

    resource = BigQueryWarehouseResource(project=BQ_PROJECT, location=BQ_LOCATION)
    return resource.open(JobContext(component, **job))
