"""What a heal costs, measured in one run.

1. Processors per Phase 4 heal: for each single-table Phase 4 failure, the processors the plan
   re-materialises, against the old cloud function's "run all five".
2. Heal sensor tick time with 10,000 earlier check results in the instance against 100: the
   sensor reads only what is newer than its cursor, so history must not slow it down. Each
   instance is a real SQLite DAGSTER_HOME filled through a run that logs check evaluations
   (about 13 ms each here, so the 10,000 take a couple of minutes to write).

    python benchmarks/bench_heal.py
"""

import os
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

TODAY = date(2026, 1, 21)
SIZES = (100, 10_000)
TICKS = 9


def processors_per_heal() -> None:
    from selfheal_dagster.core import planner
    from selfheal_dagster.definitions import defs
    from selfheal_dagster.instance.heal_loop import planner_graph
    from selfheal_dagster.tables import execution_order, in_phase

    graph = planner_graph(defs().resolve_asset_graph())
    phase4 = [t.key for t in execution_order(in_phase(4))]
    counts = []
    print(f"{'failed Phase 4 table':32} {'plan':>5} {'run-all':>8}")
    for key in phase4:
        plan = planner.plan([(key, TODAY)], graph, lambda asset, day: True, TODAY)
        n = sum(1 for run in plan.runs for a in run.assets if a in phase4)
        counts.append(n)
        print(f"{key.split('/')[-1]:32} {n:5d} {len(phase4):8d}")
    mean = statistics.mean(counts)
    print(
        f"mean processors per Phase 4 heal: {mean:.1f} vs {len(phase4)} (run all): "
        f"{len(phase4) / mean:.1f}x fewer"
    )


def fill(instance: dg.DagsterInstance, defs: dg.Definitions, count: int) -> None:
    from selfheal_dagster.tables import TABLES

    @dg.op
    def earlier_results(context: dg.OpExecutionContext) -> None:
        for i in range(count):
            t = TABLES[i % len(TABLES)]
            context.log_event(
                dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey(t.key_path),
                    check_name=("row_count", "freshness")[i % 2],
                    passed=i % 4 != 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    partition=(TODAY - timedelta(days=1 + i % 150)).isoformat(),
                    metadata={"status": "ok" if i % 4 else "missing"},
                )
            )

    @dg.job
    def history_filler() -> None:
        earlier_results()

    job = dg.Definitions.merge(defs, dg.Definitions(jobs=[history_filler]))
    job.resolve_job_def("history_filler").execute_in_process(
        instance=instance, run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    )


def tick_time(count: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
        os.environ["SELFHEAL_DUCKDB_PATH"] = str(Path(tmp) / "warehouse.duckdb")
        from selfheal_dagster import runs
        from selfheal_dagster.definitions import defs as load

        defs = load()
        with dg.DagsterInstance.get() as instance:
            t0 = time.perf_counter()
            fill(instance, defs, count)
            print(f"  {count} earlier check results written in {time.perf_counter() - t0:.0f}s")
            loop = runs.LocalLoop(defs, instance)
            loop.start()  # cursor at the newest record: all of that is history
            fill(instance, defs, 1)  # one new failure after it
            samples = []
            for _ in range(TICKS):
                t0 = time.perf_counter()
                data = loop.sensor.evaluate_tick(loop.context())
                samples.append(time.perf_counter() - t0)
            assert len(data.run_requests) == 1, data.skip_message
            return statistics.median(samples)


def main() -> None:
    processors_per_heal()
    print()
    times = {}
    for count in SIZES:
        print(f"heal sensor tick with {count} earlier check results:")
        times[count] = tick_time(count)
        print(f"  median tick {times[count] * 1000:.1f} ms over {TICKS} ticks")
    small, large = SIZES
    print(f"tick time ratio {large} vs {small} earlier results: {times[large] / times[small]:.2f}")


if __name__ == "__main__":
    main()
