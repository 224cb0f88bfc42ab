"""The sweep: evaluate every check over a watch window and record results per partition.

Materialisation-time checks cannot see a partition that was never written or was deleted
later; the sweep can. A sensor launches a sweep run every few minutes (running by default
under ``dagster dev``); the run's op logs one ``AssetCheckEvaluation`` per (check, partition)
whose outcome changed, or that has not been re-asserted for ``reassert_minutes``, so a lasting
failure is seen again without flooding the event log.
"""

from datetime import date, datetime, timedelta

import dagster as dg
from pydantic import Field

from selfheal_dagster.adapters.settings import Settings
from selfheal_dagster.adapters.warehouse import read_window
from selfheal_dagster.core.checks import CHECKS, CheckOutcome, evaluate, window_start
from selfheal_dagster.core.coverage import Window
from selfheal_dagster.core.dates import date_range, now_utc, today_et
from selfheal_dagster.core.names import SWEEP_JOB, SWEEP_SENSOR, SWEEP_TAG
from selfheal_dagster.defs.accepted import accepted
from selfheal_dagster.defs.checks import check_evaluation, check_key
from selfheal_dagster.defs.partitions import daily_partitions, job_context, partition_days
from selfheal_dagster.defs.resources import Phase1SourceResource, WarehouseResource
from selfheal_dagster.instance import check_records
from selfheal_dagster.instance.heal_loop import IN_FLIGHT
from selfheal_dagster.tables import TABLES, Table


class SweepConfig(dg.Config):
    phase2_days: int = Field(
        default=3, description="Phase 2 watch window: the N dates before today (US/Eastern)."
    )
    phase4_days: int = Field(
        default=1, description="Phase 4 watch window: today and the N-1 dates before it."
    )
    reassert_minutes: int = Field(
        default=30, description="Re-record an unchanged outcome at least this often."
    )
    now: str | None = Field(
        default=None, description="Evaluate as of this ISO timestamp instead of now (rehearsals)."
    )
    start: str | None = Field(
        default=None, description="Sweep this date range (YYYY-MM-DD) instead of the windows."
    )
    end: str | None = Field(default=None, description="Last date of the explicit range.")


def watch_targets(
    config: SweepConfig, now: datetime, partitions: list[date] | None = None
) -> list[tuple[Table, date]]:
    if partitions:  # a person re-checks dates: the run's partition, or a backfilled range
        return [(t, day) for t in TABLES for day in partitions]
    if config.start and config.end:
        span = date_range(date.fromisoformat(config.start), date.fromisoformat(config.end))
        return [(t, day) for t in TABLES for day in span]
    today = today_et(now)
    days = {
        2: [today - timedelta(days=i) for i in range(1, config.phase2_days + 1)],
        4: [today - timedelta(days=i) for i in range(config.phase4_days)],
    }
    return [(t, day) for t in TABLES for day in days[t.phase]]


def _unchanged(outcome: CheckOutcome, record, now: datetime, reassert_minutes: int) -> bool:
    previous = check_records.evaluation(record) if record else None
    if previous is None:
        return False
    status = previous.metadata.get("status")
    same = previous.passed == outcome.passed and getattr(status, "value", None) == str(
        outcome.status
    )
    # Age as of the evaluation time the result states (a rehearsal may evaluate "as of" a
    # past instant); the storage time otherwise.
    stated = previous.metadata.get("evaluated_at")
    at = stated.value if stated is not None else record.create_timestamp
    return same and now.timestamp() - at < reassert_minutes * 60


def sweep_outcomes(wh, targets, now: datetime, calendar) -> list[CheckOutcome]:
    """Every check over the targets. The dates watched are read in the tables themselves,
    one pruned query per table (rows, newest load, keys: partition metadata cannot count
    keys, and it may lag the writes); the history behind the volume bounds from partition
    metadata where the engine has it (BigQuery: one query per dataset, no table bytes)."""
    days = sorted({day for _, day in targets})
    start, first, end = window_start(days), days[0], days[-1]
    if wh.metadata_is_exact:
        return evaluate(targets, read_window(wh, start, end), now, calendar)
    history = read_window(wh, start, end, metadata=True)
    watched = read_window(wh, first, end)
    stats = {
        name: {d: s for d, s in found.items() if d < first} | watched.stats.get(name, {})
        for name, found in history.stats.items()
    }
    return evaluate(targets, Window(start=start, end=end, stats=stats), now, calendar)


@dg.op(description="Evaluate every check over the watch window; record what changed.")
def sweep_checks(
    context: dg.OpExecutionContext,
    config: SweepConfig,
    warehouse: WarehouseResource,
    source: Phase1SourceResource,
) -> dg.Output[None]:
    now = datetime.fromisoformat(config.now) if config.now else now_utc()
    # A partitioned run re-checks its dates; the sensor's runs (no partition) the window.
    has_partitions = context.has_partition_key or context.has_partition_key_range
    partitions = partition_days(context) if has_partitions else None
    targets = watch_targets(config, now, partitions)
    days = sorted({day for _, day in targets})
    read_at = now_utc()
    with warehouse.open(job_context(context, "sweep")) as wh:
        outcomes = sweep_outcomes(wh, targets, now, source.scheduled_games)
        queries = wh.statements
    keys = [check_key(t, name) for t in TABLES for name in CHECKS]
    latest = check_records.latest_by_partition(context.instance, keys, days)
    recorded = 0
    written: dict[str, dict] = {}  # per table, read only when one of its results is recorded
    for outcome in outcomes:
        key = check_key(outcome.table, outcome.check)
        record = latest.get((key, outcome.day))
        if record is not None and check_records.is_planned(record):
            # A run planned it (and may never evaluate it): compare with the last result.
            record = check_records.latest_result(context.instance, key, outcome.day)
        if not partitions and _unchanged(outcome, record, now, config.reassert_minutes):
            continue  # a re-check a person asked for records every result
        table = outcome.table
        if table.name not in written:
            asset = dg.AssetKey(table.key_path)
            written[table.name] = check_records.targets(context.instance, asset, days)
        context.log_event(check_evaluation(outcome, read_at, written[table.name]))
        recorded += 1
    failing = [f"{o.table.name} {o.day} {o.check}: {o.reason}" for o in outcomes if o.heals]
    return dg.Output(
        None,
        metadata={
            "evaluated": len(outcomes),
            "recorded": recorded,
            # Shown inline on the run's page; the whole list is one click away (markdown).
            "failing_count": len(failing),
            "first_failing": failing[0] if failing else "none",
            "failing": dg.MetadataValue.md("\n".join(f"- {f}" for f in failing) or "none"),
            "warehouse_queries": queries,
            "dates": ", ".join(d.isoformat() for d in days),
        },
    )


@dg.job(
    name=SWEEP_JOB,
    partitions_def=daily_partitions,
    # One op: in production's multiprocess executor each sweep would start a second process
    # (importing Dagster and the location again) only to run that op, every interval.
    executor_def=dg.in_process_executor,
    description=(
        "Sweep the watch window with every check. Launched for a game date (or backfilled "
        "over a range) from its Partitions tab, it re-checks every table on those dates and "
        "records every result; the sweep sensor's runs have no partition and sweep the window."
    ),
)
def sweep_job() -> None:
    sweep_checks()


def sweep_sensor(interval_seconds: int, config: SweepConfig) -> dg.SensorDefinition:
    def _sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        in_flight = context.instance.get_run_records(
            dg.RunsFilter(job_name=SWEEP_JOB, statuses=list(IN_FLIGHT)), limit=1
        )
        if in_flight:
            return dg.SkipReason(f"sweep run {in_flight[0].dagster_run.run_id} is still in flight")
        bucket = int(now_utc().timestamp() // interval_seconds)
        return dg.RunRequest(
            run_key=f"sweep-{bucket}",
            run_config=dg.RunConfig(ops={"sweep_checks": config}),
            tags={SWEEP_TAG: "true"},
        )

    with accepted(dg.BetaWarning):  # Dagster's own sensor constructor warns about `owners`
        return dg.sensor(
            name=SWEEP_SENSOR,
            job=sweep_job,
            minimum_interval_seconds=interval_seconds,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=f"Launch a sweep run every {interval_seconds}s unless one is in flight.",
        )(_sensor)


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    return dg.Definitions(
        jobs=[sweep_job],
        sensors=[
            sweep_sensor(
                settings.sweep_interval_seconds,
                SweepConfig(
                    phase2_days=settings.sweep_phase2_days,
                    phase4_days=settings.sweep_phase4_days,
                    reassert_minutes=settings.sweep_reassert_minutes,
                ),
            )
        ],
    )
