"""Batched sweep vs the old cloud function's one query per table per date, in one run.

A local DuckDB warehouse holds 180 dates x 9 tables (synthetic rows: the read cost depends on
row counts, not values). Both approaches read every (table, date)'s row count and load time;
the batched one also counts each partition's keys, then evaluates every check for all 1,620
partitions. Then the production sweep through the strict BigQuery double: the jobs it sends
for a narrow and a wide watch window (partition metadata per dataset, one pruned query per
table for the watched dates' rows and keys), the same number whatever the width.

    python benchmarks/bench_sweep.py
"""

import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb

from selfheal_dagster.adapters.warehouse import read_window
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.core.checks import CHECKS, evaluate
from selfheal_dagster.core.dates import date_range, now_utc
from selfheal_dagster.tables import LOADED_AT, TABLES

DATES = 180
ROWS_PER_DATE = 200
END = date(2026, 4, 12)
START = END - timedelta(days=DATES - 1)


def fill(wh: DuckDBWarehouse) -> None:
    wh.ensure_tables()
    con = duckdb.connect(wh.path)
    for t in TABLES:
        con.execute(
            f"INSERT INTO {wh.ref(t)} ({t.partition_column}, {LOADED_AT}) "
            "SELECT CAST(? AS DATE) + CAST(d.range AS INTEGER), now() "
            "FROM range(?) AS d, range(?) AS r",
            [START, DATES, ROWS_PER_DATE],
        )
    con.close()


def old_way(wh: DuckDBWarehouse) -> dict:
    return {
        (t.name, d): wh.partition_stats(t, d, d).get(d)
        for t in TABLES
        for d in date_range(START, END)
    }


def old_way_one_connection(wh: DuckDBWarehouse) -> dict:
    """The same per-(table, date) queries over one reused connection: the old approach's
    lower bound, without a connection (or a BigQuery job round trip) per query."""
    out = {}
    with wh.connect() as con:
        for t in TABLES:
            for d in date_range(START, END):
                wh.statements += 1
                out[(t.name, d)] = con.execute(
                    f"SELECT COUNT(*), MAX({LOADED_AT}) FROM {wh.ref(t)} "
                    f"WHERE {t.partition_column} = ?",
                    [d],
                ).fetchone()
    return out


def batched(wh: DuckDBWarehouse) -> list:
    window = read_window(wh, START, END)
    return evaluate([(t, d) for t in TABLES for d in date_range(START, END)], window, now_utc())


def measure(fn, wh: DuckDBWarehouse) -> tuple[float, int, object]:
    wh.statements = 0
    t0 = time.perf_counter()
    result = fn(wh)
    return time.perf_counter() - t0, wh.statements, result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wh = DuckDBWarehouse(Path(tmp) / "bench.duckdb")
        fill(wh)
        measure(batched, wh)  # warm both paths once
        old_s, old_q, old = measure(old_way, wh)
        one_s, one_q, _ = measure(old_way_one_connection, wh)
        new_s, new_q, outcomes = measure(batched, wh)
        assert sum(1 for v in old.values() if v) == len(TABLES) * DATES
        assert len(outcomes) == len(CHECKS) * len(TABLES) * DATES
    print(f"{DATES} dates x {len(TABLES)} tables = {DATES * len(TABLES)} partitions")
    print(f"{'approach':40} {'queries':>8} {'wall s':>8}")
    print(f"{'one query per table per date (old)':40} {old_q:8d} {old_s:8.3f}")
    print(f"{'  same, one reused connection':40} {one_q:8d} {one_s:8.3f}")
    print(f"{'batched sweep (read + evaluate)':40} {new_q:8d} {new_s:8.3f}")
    print(f"ratio: {old_q / new_q:.0f}x fewer queries, {old_s / new_s:.1f}x less wall time")
    print(f"ratio vs one reused connection: {one_s / new_s:.1f}x less wall time")
    narrow, wide = bigquery_jobs(3), bigquery_jobs(30)
    print(f"BigQuery sweep, jobs sent: 3 watched dates {narrow}, 30 watched dates {wide}")
    assert narrow == wide


def bigquery_jobs(watched: int) -> int:
    """Jobs one production sweep sends over ``watched`` dates of every table."""
    import json
    import os
    from unittest import mock

    from selfheal_dagster.core.job_context import JobContext
    from selfheal_dagster.defs.resources import BigQueryWarehouseResource
    from selfheal_dagster.defs.sweep import sweep_outcomes
    from selfheal_dagster_tests.bigquery_double import BigQueryDouble, service_account_key

    double = BigQueryDouble("nba-props-bench", "US")
    with tempfile.TemporaryDirectory() as tmp, double.serve():
        key = Path(tmp) / "key.json"
        key.write_text(json.dumps(service_account_key(double.url, "nba-props-bench")))
        env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key), "BIGQUERY_EMULATOR_HOST": double.url}
        with mock.patch.dict(os.environ, env):
            resource = BigQueryWarehouseResource(project="nba-props-bench", location="US")
            with resource.open(JobContext("bench")) as wh:
                wh.ensure_tables()
                before = len(double.received)
                days = date_range(END - timedelta(days=watched - 1), END)
                sweep_outcomes(wh, [(t, d) for t in TABLES for d in days], now_utc(), None)
                return len(double.received) - before


if __name__ == "__main__":
    main()
