"""Shared fixtures: a real DuckDB file and a real Dagster instance per test, no network."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.defs_state.base import DefsStateStorage

from selfheal_dagster import runs
from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_SEED
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster_tests.support import (
    GAME_DAY,
    PROD_CID,
    PROD_RUN_ID,
    ROOT,
    bigquery_double,
    bigquery_warehouse,
    load_phase2,
    selfheal,
)

TESTS = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse", action="store_true", help="run the tests in reverse order (order checks)"
    )


# The suite's four layers (the style guide's) are its folders: unit/, assets/, sensors/, e2e/,
# each also a marker (``pytest -m unit`` and friends). ``fast`` is what ``make test-fast`` runs
# after every change: the pure core, the registry, checks, planner, SQL and the assets against
# DuckDB, with no server, browser or daemon.
LAYERS = ("unit", "assets", "sensors", "e2e")
ORDER = ("unit", "e2e", "sensors", "assets")  # the order they run in (make test)
FAST = {"unit": None, "assets": {"test_assets"}}  # None: the whole layer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its layer, the folder it is in (and ``fast``); a test outside the
    layers is an error, so a new test module says where it belongs by where it is."""
    for item in items:
        path = Path(str(item.path)).resolve()
        layer = path.parent.name
        if path.parent.parent != TESTS or layer not in LAYERS:
            raise pytest.UsageError(f"{path.name}: move it into a layer folder {LAYERS}")
        item.add_marker(getattr(pytest.mark, layer))
        if layer in FAST and (FAST[layer] is None or path.stem in FAST[layer]):
            item.add_marker(pytest.mark.fast)

    # The order make test's workers take the files in (pytest-xdist, a file per worker at a
    # time, in this order): the files of the long tests first, each on a worker of its own;
    # then the unit layer, which is what each of those workers is handed next and finishes at
    # once; then the slowest layers, so the quick tests fill in at the end.
    def order(item: pytest.Item) -> tuple[bool, int]:
        layer = Path(str(item.path)).parent.name
        return (item.get_closest_marker("long") is None, ORDER.index(layer))

    items.sort(key=order)
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


def _test_instance(folder: Path, events_on_disk: bool = False):
    """A test instance in ``folder``. Its event log is in memory (Dagster's own
    ``InMemoryEventLogStorage``: the same SQL event log on an in-memory SQLite database), so
    only this instance object sees its events: three sensor files took 63 CPU-s with the log
    on disk, 48 in memory. ``events_on_disk``: one SQLite database (as production's is one
    Postgres database) rather than a database per run, for a test whose second instance
    (``runs.instance()``, as the ``selfheal`` command opens it) must see the same events."""
    events = (
        {
            "module": "dagster.core.storage.event_log",
            "class": "ConsolidatedSqliteEventLogStorage",
            "config": {"base_dir": str(folder / "event_log")},
        }
        if events_on_disk
        else {
            "module": "dagster._core.storage.event_log.in_memory",
            "class": "InMemoryEventLogStorage",
            "config": {},
        }
    )
    return dg.instance_for_test(temp_dir=str(folder), overrides={"event_log_storage": events})


@pytest.fixture(scope="session")
def empty_instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An instance's storage created once per worker: creating its SQLite databases (and
    stamping their schema) is 0.19 CPU-s, copying the files 0.04."""
    folder = tmp_path_factory.mktemp("empty_instance")
    with _test_instance(folder, events_on_disk=True) as made:
        made.get_runs()
    return folder


@contextmanager
def _copied_instance(env: Path, empty_instance: Path, events_on_disk: bool):
    shutil.copytree(empty_instance, env / "instance")
    with _test_instance(env / "instance", events_on_disk) as inst:
        yield inst


@pytest.fixture
def instance(
    env: Path, empty_instance: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """This test's own instance (see ``_test_instance``), from a copy of the empty one; its
    events are seen only through this object, so opening ``DAGSTER_HOME`` again fails the
    test, naming the fixture that allows it."""

    def elsewhere() -> dg.DagsterInstance:
        raise AssertionError(
            "runs.instance() under the `instance` fixture: its events are in memory, a second "
            "instance would not see them; take `home_instance`"
        )

    with _copied_instance(env, empty_instance, events_on_disk=False) as inst:
        monkeypatch.setattr(runs, "instance", elsewhere)
        yield inst


@pytest.fixture
def home_instance(env: Path, empty_instance: Path) -> Iterator[dg.DagsterInstance]:
    """The same, its events on disk: ``runs.instance()`` (``DAGSTER_HOME``) opens it too."""
    with _copied_instance(env, empty_instance, events_on_disk=True) as inst:
        yield inst


@pytest.fixture
def defs(env: Path) -> dg.Definitions:
    """The full code location, loaded fresh so it reads this test's environment."""
    from selfheal_dagster.definitions import defs as load

    return load()


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


DEMO_ARGS = ("demo", "--end", "2026-01-20", "--days", "2")


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Callable[[Path], subprocess.CompletedProcess]:
    """``selfheal demo --end 2026-01-20 --days 2``, run once per ``pytest`` run, and a copy of
    what it made (its warehouse and Dagster home) for each test that asks: ``demo(folder)``
    copies them into ``folder`` and gives the demo's exit code and output. The first test to
    ask runs it (about 35 CPU-s) in a folder every xdist worker of the run shares, under a
    file lock; a test asking meanwhile waits for it. Nothing in the copy refers to the
    folder it was made in (the instance's storage is relative to ``DAGSTER_HOME``)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    made, said = shared / "demo", shared / "demo.json"
    with open(shared / "demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not said.exists():
            shutil.rmtree(made, ignore_errors=True)  # an attempt that was interrupted
            made.mkdir()
            out = selfheal(made, *DEMO_ARGS)
            kept = {"returncode": out.returncode, "stdout": out.stdout, "stderr": out.stderr}
            said.write_text(json.dumps(kept))
    kept = json.loads(said.read_text())

    def copy(folder: Path) -> subprocess.CompletedProcess:
        shutil.copytree(made, folder, dirs_exist_ok=True)
        return subprocess.CompletedProcess(["selfheal", *DEMO_ARGS], **kept)

    return copy


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


ZETASQL_CACHE = ROOT / ".selfheal" / "zetasql"


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


@pytest.fixture
def bigquery(tmp_path: Path, zetasql):
    """The strict BigQuery double for one test (see ``bigquery_double``)."""
    with bigquery_double(tmp_path, zetasql) as double:
        yield double


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
