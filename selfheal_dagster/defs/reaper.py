"""The run reaper, and the cancelling of a dead run's BigQuery jobs.

The reaper fails runs whose worker process is gone (see ``instance/orphans.py``). Without it,
a ``kill -9`` of ``dagster dev`` or of ``selfheal backfill`` leaves runs STARTED forever: the
sweep skips every tick ("still in flight"), the heal loop and ``selfheal heal`` refuse the
partitions those runs write. Failed here, each such run ends like any failed run: the
outcome sensors close its heal records and the heal loop retries it as an attempt.

In production a run's warehouse work is BigQuery jobs, which outlive the process that
started them. A step that is interrupted cancels its own job; a run that ends failed or
canceled for a reason its process could not act on (killed, reaped by run monitoring, a
lost node) has every job labelled with its run id cancelled here, so none writes later.
"""

import dagster as dg

from selfheal_dagster.adapters.settings import Settings
from selfheal_dagster.core.job_context import JobContext
from selfheal_dagster.core.names import RUN_REAPER
from selfheal_dagster.defs.resources import WarehouseResource
from selfheal_dagster.instance import orphans

INTERVAL_SECONDS = 30
JOB_CANCELLERS = {
    dg.DagsterRunStatus.FAILURE: "cancel_bigquery_jobs_of_failed_runs",
    dg.DagsterRunStatus.CANCELED: "cancel_bigquery_jobs_of_canceled_runs",
}


@dg.sensor(
    name=RUN_REAPER,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Fail STARTED runs whose run worker process is gone from this machine (a killed "
        "dagster dev or CLI), so nothing waits on them; Dagster's run monitoring does not do "
        "this for the default run launcher."
    ),
)
def run_reaper(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    lines = orphans.fail(context.instance, orphans.find(context.instance))
    for line in lines:
        context.log.warning(line)
    return dg.SkipReason("; ".join(lines) if lines else "no orphaned runs")


def job_canceller(status: dg.DagsterRunStatus) -> dg.RunStatusSensorDefinition:
    @dg.run_status_sensor(
        name=JOB_CANCELLERS[status],
        run_status=status,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Cancel the BigQuery jobs still pending or running for a run that ended "
            f"{status.value}, so a dead run never writes later."
        ),
    )
    def _sensor(context: dg.RunStatusSensorContext, warehouse: WarehouseResource):
        run = context.dagster_run
        with warehouse.open(JobContext("janitor", run_id=run.run_id)) as wh:
            cancelled = wh.cancel_run_jobs(run.run_id)
        if not cancelled:
            return dg.SkipReason(f"run {run.run_id} left no BigQuery job running")
        context.log.warning(f"run {run.run_id}: cancelled BigQuery jobs {', '.join(cancelled)}")
        return None

    return _sensor


@dg.definitions
def defs() -> dg.Definitions:
    sensors = [run_reaper]
    if Settings.from_env().is_prod:
        sensors += [job_canceller(status) for status in JOB_CANCELLERS]
    return dg.Definitions(sensors=sensors)
