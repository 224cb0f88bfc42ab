"""What the tests share besides fixtures: the dates they use, the bound on every wait, ways
to fill a warehouse, the strict BigQuery double and its ZetaSQL analyser, the ``selfheal``
command, the in-process loop. It imports no test module, and the double and the ZetaSQL
engine only where used; ``conftest.py`` (fixtures), ``daemon.py`` and ``postgres.py`` import
from here, so the support files have no circle (``test_layers.py`` checks both).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, timedelta
from pathlib import Path

import pytest

from selfheal_dagster import runs
from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.core.dates import eastern, now_utc, today_et

# A mid-season Tuesday of the 2025-26 season with games on it and around it.
GAME_DAY = date(2026, 1, 20)
ALL_STAR_SUNDAY = date(2026, 2, 15)

# Every wait in a test is a bound a slow, loaded 2-core machine meets, never a speed check;
# SELFHEAL_TEST_WAIT_SCALE multiplies them all for a machine slower still.
WAIT_SCALE = float(os.environ.get("SELFHEAL_TEST_WAIT_SCALE", "1"))

# The repository's root: the project's files (README, deploy/, workspace.yaml) and cwd of
# the commands the tests run.
ROOT = Path(__file__).resolve().parents[1]

# How often the tests under the daemon sweep: every sweep is a run, and every run a process
# that imports Dagster and the location again; each test's faults are found by the first.
DAEMON_SWEEP_SECONDS = "45"
# How often the heal sensor ticks under the daemon: each tick is a call into the code server
# and a read of the check records and the warehouse. An idle `dagster dev` costs 0.17 CPU-s
# a second ticking every 5 s, 0.13 every 30 s; 10 s keeps a heal within seconds of its fault.
DAEMON_HEAL_SECONDS = "10"


# The tests under the daemon whose gap is a recent game day (no Phase 4 partition exists to
# read it, so its heal is the one table's) sweep the dates before today in this window: each
# date is 12 check results a sweep, every one an event the first sweep records. Their Phase 2
# holds 40 days, the history the row-count check learns its bounds from.
RECENT_SWEEP_DAYS = 12
PHASE2_HISTORY_DAYS = 40


# The longest a test under the daemon takes on a loaded machine (measured: 8 minutes in a
# 15-minute suite on 2 cores), with room to spare.
DAEMON_TEST_MINUTES = 15


def daemon_today() -> date:
    """Today (US/Eastern) for a test under the daemon, which reads the clock itself: a test
    that started shortly before midnight first waits for it, so that the daemon's today is
    the test's from start to end (its sweep windows and targets move at midnight)."""
    now = now_utc()
    midnight = eastern(today_et(now) + timedelta(days=1), 0)
    left = (midnight - now).total_seconds()
    if left < DAEMON_TEST_MINUTES * 60 * WAIT_SCALE:
        print(f"{left:.0f}s to midnight US/Eastern: waiting for it, so that today holds")
        time.sleep(left + 1)
    return today_et()


def bound(seconds: float) -> float:
    """A generous wait, scaled by ``SELFHEAL_TEST_WAIT_SCALE``."""
    return seconds * WAIT_SCALE


def game_days_ago(league: League, today: date, first: int, last: int) -> list[date]:
    """The game days ``first`` to ``last`` - 1 days before ``today``, newest first; skips the
    test when there is none (a daemon test needs an old date that nothing recent reads)."""
    found = [
        today - timedelta(days=i)
        for i in range(first, last)
        if league.games_on(today - timedelta(days=i))
    ]
    if not found:
        pytest.skip(f"no game day {first}-{last - 1} days before {today} in the simulated league")
    return found


def load_phase2(warehouse: DuckDBWarehouse, league: League, start: date, end: date) -> None:
    """Fill Phase 2 straight from the league (no Dagster) to give Phase 4 its history: one
    write per table for the whole range (a write per date opens the file that many times)."""
    from selfheal_dagster.core.dates import date_range
    from selfheal_dagster.tables import in_phase

    days = date_range(start, end)
    for table in in_phase(2) if days else ():
        warehouse.replace_partitions(table, {day: league.feed(table.feed, day) for day in days})


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


PROD_RUN_ID = "5f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
PROD_CID = "a1b2c3d4-0000-4000-8000-000000000000"


def bigquery_warehouse(component: str = "cli", **job):
    """The production warehouse against the double (labels from a job context)."""
    from selfheal_dagster.core.job_context import JobContext
    from selfheal_dagster.defs.resources import BigQueryWarehouseResource

    resource = BigQueryWarehouseResource(project=BQ_PROJECT, location=BQ_LOCATION)
    return resource.open(JobContext(component, **job))


class SweepingLoop(runs.LocalLoop):
    """The in-process daemon loop (``runs.LocalLoop``) on a warehouse, sweeping the Phase 2
    window around GAME_DAY as of two days after it, 13:00 US/Eastern."""

    NOW = eastern(GAME_DAY + timedelta(days=2), 13)  # sweep "today": Phase 2 window GAME_DAY±1

    def __init__(self, defs, instance, warehouse):
        super().__init__(defs, instance)
        self.warehouse = warehouse
        self.start()

    def sweep(self):
        return super().sweep(now=self.NOW.isoformat(), phase4_days=0, reassert_minutes=0)

    def run(self, request):
        return self.execute(request)


def selfheal(env_dir: Path, *args: str, extra_env=None) -> subprocess.CompletedProcess:
    """The ``selfheal`` command in a process of its own, on ``env_dir``'s warehouse and
    Dagster home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))}
    env.update(
        SELFHEAL_DUCKDB_PATH=str(env_dir / "warehouse.duckdb"),
        DAGSTER_HOME=str(env_dir / "dagster_home"),
        COLUMNS="200",
    )
    env.update(extra_env or {})
    if "DAGSTER_HOME" not in (extra_env or {}):
        (env_dir / "dagster_home").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "selfheal_dagster.cli", *args],
        cwd=env_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=bound(900),
    )


def selfheal_here(*args: str) -> int:
    """The ``selfheal`` command in this process (the test's environment): its exit code."""
    from selfheal_dagster import cli

    try:
        cli.main(list(args))
    except SystemExit as exc:
        return exc.code or 0
    return 0


def fingerprint(wh, table, day) -> list[tuple]:
    """A partition's rows, load time aside, in one order: equal means the exact rows."""
    cols = ", ".join(c for c in table.column_names if c != "_loaded_at")
    rows = wh.query(
        f"SELECT {cols} FROM {wh.ref(table)} WHERE {table.partition_column} = $d ORDER BY ALL",
        {"d": day},
    )
    return [tuple(r.values()) for r in rows]
