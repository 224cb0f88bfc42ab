"""A season's backfill on the embedded default: ranged runs against one run per date.

Both modes materialise all nine tables over the same dates, in this process, each into its
own DuckDB file and Dagster instance, measured side by side in the same run:

- range: ``selfheal backfill``'s way, Phase 2 of the whole range in one run, then Phase 4;
- per date: one run per date (all nine tables, oldest date first), the way before ranges.

Printed: wall time, Dagster runs, warehouse statements, and whether every partition's rows
are the same in both (fingerprints, ``_loaded_at`` aside). Then the runs a box-score day's
heal plans. Targets: >= 10x less wall time for the season, 2 runs per box-score heal.

    python benchmarks/bench_backfill.py [--days 180]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg


def fingerprint(path: Path, days) -> dict[str, str]:
    from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
    from selfheal_dagster.tables import LOADED_AT, TABLES

    wh = DuckDBWarehouse(path)
    out = {}
    for table in TABLES:
        rows = wh.query(f"SELECT * EXCLUDE ({LOADED_AT}) FROM {wh.ref(table)} ORDER BY ALL")
        by_day: dict = {}
        for r in rows:
            clean = {k: float(f"{v:.12g}") if isinstance(v, float) else v for k, v in r.items()}
            by_day.setdefault(r[table.partition_column], []).append(clean)
        for day in days:
            blob = json.dumps(by_day.get(day, []), default=str, sort_keys=True).encode()
            out[f"{table.name} {day}"] = hashlib.sha256(blob).hexdigest()
    return out


def run_mode(mode: str, days, root: Path, events_in_memory: bool = False) -> dict:
    from selfheal_dagster import runs
    from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
    from selfheal_dagster.definitions import defs as load
    from selfheal_dagster.tables import TABLES

    path = root / f"{mode}.duckdb"
    os.environ["SELFHEAL_DUCKDB_PATH"] = str(path)
    statements = {"n": 0}
    real = DuckDBWarehouse._exec

    def counted(self, con, sql, params=None):
        statements["n"] += 1
        return real(self, con, sql, params)

    DuckDBWarehouse._exec = counted
    try:
        defs = load()
        home = root / f"{mode}_home"
        home.mkdir()
        instance_cm = (
            dg.DagsterInstance.ephemeral(tempdir=str(home))
            if events_in_memory
            else dg.instance_for_test(temp_dir=str(home))
        )
        with instance_cm as instance:
            t0 = time.perf_counter()
            if mode == "range":
                outcomes = runs.materialize(
                    days, TABLES, dagster_instance=instance, defs=defs, by_phase=True
                )
            else:
                outcomes = []
                for day in days:
                    outcomes += runs.materialize(
                        [day], TABLES, dagster_instance=instance, defs=defs
                    )
                    if len(outcomes) % 30 == 0:
                        print(f"  per date: {len(outcomes)}/{len(days)} runs", flush=True)
            wall = time.perf_counter() - t0
            records = instance.get_run_records()
            count = len(records)
            events = sum(len(instance.all_logs(r.dagster_run.run_id)) for r in records)
    finally:
        DuckDBWarehouse._exec = real
    failed = [o for o in outcomes if not o.success]
    return {
        "wall": wall,
        "runs": count,
        "events": events,
        "statements": statements["n"],
        "failed": [f"{o.label}: {'; '.join(o.errors)[:200]}" for o in failed],
        "rows": fingerprint(path, days),
    }


def runs_per_box_heal(days) -> list[int]:
    from selfheal_dagster.core import planner
    from selfheal_dagster.definitions import defs as load
    from selfheal_dagster.instance.heal_loop import planner_graph
    from selfheal_dagster.tables import BY_NAME

    graph = planner_graph(load().resolve_asset_graph())
    box = BY_NAME["bdl_player_boxscores"].key
    last = days[-1]
    out = []
    for day in days[len(days) // 3 :: 20]:  # mid-season days: a full lookback after them
        plan = planner.plan([(box, day)], graph, lambda a, d: True, last)
        out.append(len(plan.runs))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=180, help="dates from the season opener")
    parser.add_argument(
        "--events-in-memory",
        action="store_true",
        help="Dagster's in-memory instance instead of the embedded SQLite one: what the ratio "
        "becomes when storing an event costs almost nothing",
    )
    args = parser.parse_args()
    from selfheal_dagster.adapters.settings import season_start

    for name in ("SELFHEAL_ENV", "SELFHEAL_LEAGUE_OUTAGES", "SELFHEAL_LEAGUE_SHORT"):
        os.environ.pop(name, None)
    first = season_start()
    days = [first + timedelta(days=i) for i in range(args.days)]
    store = "in-memory Dagster instance" if args.events_in_memory else "embedded SQLite instance"
    print(
        f"backfill of 9 tables x {len(days)} dates ({days[0]} .. {days[-1]}), embedded DuckDB, "
        f"{store}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ranged = run_mode("range", days, root, args.events_in_memory)
        print(f"  range: {ranged['wall']:.1f} s", flush=True)
        per_date = run_mode("per_date", days, root, args.events_in_memory)
    print(
        f"{'':12} {'wall s':>9} {'runs':>6} {'statements':>11} {'Dagster events':>15} "
        f"{'failed runs':>12}"
    )
    for name, m in (("per date", per_date), ("range", ranged)):
        print(
            f"{name:12} {m['wall']:9.1f} {m['runs']:6d} {m['statements']:11d} "
            f"{m['events']:15d} {len(m['failed']):12d}"
        )
    for m in (per_date, ranged):
        for line in m["failed"][:3]:
            print(f"  failed: {line}")
    speedup = per_date["wall"] / ranged["wall"]
    same = per_date["rows"] == ranged["rows"]
    differ = sorted(k for k in per_date["rows"] if per_date["rows"][k] != ranged["rows"].get(k))
    print(
        f"wall time: {speedup:.1f}x less with ranges (target >= 10x); runs "
        f"{per_date['runs']} -> {ranged['runs']}; statements "
        f"{per_date['statements']} -> {ranged['statements']}"
    )
    per_event = ranged["wall"] / max(1, ranged["events"])
    print(
        f"Dagster events: {per_date['events']} -> {ranged['events']} "
        f"({per_date['events'] / max(1, ranged['events']):.1f}x fewer); a range run's wall time "
        f"is {per_event * 1000:.0f} ms per stored event"
    )
    print(f"same rows in every partition: {same}" + (f" (differ: {differ[:5]})" if differ else ""))
    heals = runs_per_box_heal(days)
    print(f"runs per box-score-day heal (planned, mid-season days): {heals} (target 2)")
    ok = speedup >= 10 and same and all(n == 2 for n in heals)
    print("targets met" if ok else "targets NOT met")
    # A benchmark reports; only different rows (a correctness failure) fail the command.
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
