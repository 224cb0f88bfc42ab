"""The heal history as an asset: one partition per day (US/Eastern) of heal activity, its
figures as numeric metadata, so the asset's Plots tab shows the trend and the lineage shows
where heal records come from (the tables the heals rewrite).

A schedule re-materialises today's partition every hour (and, just after midnight,
yesterday's final figures); ``selfheal demo`` materialises it at its end.
"""

from datetime import date, datetime, timedelta
from statistics import median

import dagster as dg

from selfheal_dagster.core import history
from selfheal_dagster.core.dates import EASTERN, eastern, now_utc, today_et
from selfheal_dagster.core.history import HealRecord, summarize
from selfheal_dagster.core.names import METRICS_JOB
from selfheal_dagster.defs.partitions import daily_partitions, job_context
from selfheal_dagster.defs.resources import WarehouseResource
from selfheal_dagster.tables import PHASE_OWNERS, TABLES

HEAL_HISTORY = dg.AssetKey(["selfheal", "heal_history"])
GROUP = "orchestration"
# Enough for a day's records many times over: a day with more is a day to read the table.
DAY_LIMIT = 100_000


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The instants a US/Eastern day covers: [midnight, next midnight)."""
    return eastern(day, 0), eastern(day + timedelta(days=1), 0)


def _median(values: list[float]) -> float | None:
    return round(median(values), 1) if values else None


def day_figures(records: list[HealRecord]) -> dict[str, float | int | None]:
    """One day's heal figures, from the records triggered that day (their outcomes as now)."""
    figures = summarize(records)
    del figures["records"]
    to_trigger = [
        (r.timestamp - r.detected_at).total_seconds()
        for r in records
        if r.detected_at and r.healing_result.triggered
    ]
    to_heal = [r.seconds_to_heal for r in records if r.seconds_to_heal is not None]
    figures["median_seconds_to_trigger"] = _median(to_trigger)
    figures["median_seconds_to_heal"] = _median(to_heal)
    return figures


def _metadata(figures: dict[str, float | int | None]) -> dict[str, object]:
    # A plot needs a number on every point: a day with no heals has medians of 0, flagged.
    out: dict[str, object] = {
        k: dg.MetadataValue.float(float(v or 0)) if k.startswith("median") else int(v or 0)
        for k, v in figures.items()
    }
    out["has_timings"] = figures["median_seconds_to_heal"] is not None
    return out


@dg.asset(
    key=HEAL_HISTORY,
    group_name=GROUP,
    partitions_def=daily_partitions,
    deps=[dg.AssetKey(t.key_path) for t in TABLES],
    owners=[PHASE_OWNERS[4]],
    kinds={"python"},
    description=(
        f"The heal history ({history.DATASET}.{history.TABLE}): one record per heal of a date "
        "and phase, written by the heal sensor and its outcome sensors. Each partition is a "
        "day (US/Eastern) of heals triggered; its metadata counts them (triggered, healed, "
        "failed, gave up, skipped, still open) and gives the median seconds from detection "
        "to the heal's launch and to healed. See the Plots tab for the trend."
    ),
    metadata={"dagster/table_name": f"{history.DATASET}.{history.TABLE}"},
)
def heal_history(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    since, until = day_bounds(day)
    with warehouse.open(job_context(context, "metrics")) as wh:
        records = wh.history(since=since, until=until, limit=DAY_LIMIT)
    figures = day_figures(records)
    context.log.info(f"heal history {day}: {figures}")
    return dg.MaterializeResult(metadata=_metadata(figures))


heal_metrics_job = dg.define_asset_job(
    METRICS_JOB,
    selection=[HEAL_HISTORY],
    description="Count a day's heals into the heal history asset's metadata.",
)


def metrics_requests(now: datetime) -> list[dg.RunRequest]:
    """Today's partition every hour; in the first hour also yesterday's final figures."""
    today = today_et(now)
    days = [today - timedelta(days=1), today] if now < eastern(today, 1) else [today]
    hour = now.astimezone(EASTERN).strftime("%Y-%m-%dT%H")
    return [
        dg.RunRequest(run_key=f"heal-metrics-{d}-{hour}", partition_key=d.isoformat()) for d in days
    ]


@dg.schedule(
    job=heal_metrics_job,
    cron_schedule="5 * * * *",
    execution_timezone="America/New_York",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour: today's heal figures (and yesterday's, just after midnight).",
)
def heal_metrics_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    now = context.scheduled_execution_time or now_utc()
    return metrics_requests(now)


defs = dg.Definitions(
    assets=[heal_history], jobs=[heal_metrics_job], schedules=[heal_metrics_schedule]
)
