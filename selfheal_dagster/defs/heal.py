"""Healing: ``heal_job``, the heal sensor that launches it, and the sensors that verify it.

The heal sensor is the loop of ``instance/heal_loop.py``: gather (new check results, the heal runs
it owns, every run in flight), decide (``core/healing.py``: each failing target open ->
healing -> healed | failed -> back-off -> ... -> gave up, or superseded), apply (history,
run tags, run requests). The alerts sensor sends what the history owes, off that path. The
run-status sensors record each heal run's outcome as it ends. Every side effect is keyed so
that a re-run tick repeats nothing.
"""

import dagster as dg

from selfheal_dagster.adapters.settings import Settings
from selfheal_dagster.core import heal_state
from selfheal_dagster.core.dates import now_utc, today_et
from selfheal_dagster.core.job_context import JobContext
from selfheal_dagster.core.names import ALERTS_SENSOR, HEAL_JOB, HEAL_SENSOR, OUTCOME_SENSORS
from selfheal_dagster.defs.accepted import accepted
from selfheal_dagster.defs.resources import (
    AlertsResource,
    Phase1SourceResource,
    WarehouseResource,
)
from selfheal_dagster.instance.heal_loop import planner_graph, tick, verify
from selfheal_dagster.tables import PHASE_GROUPS

heal_job = dg.define_asset_job(
    HEAL_JOB,
    selection=dg.AssetSelection.groups(*PHASE_GROUPS.values()),
    description=(
        "Re-materialise the selected tables of one date in dependency order. The heal sensor "
        "launches it with the planned selection; people can backfill it for a range."
    ),
)


def heal_tick(
    context: dg.SensorEvaluationContext,
    warehouse,
    policy: heal_state.Policy,
    now=None,
    calendar=None,
) -> dg.SensorResult:
    """One heal sensor tick (``now`` only for rehearsing another instant)."""
    now = now or now_utc()
    requests, cursor, summary = tick(
        instance=context.instance,
        cursor=context.cursor,
        warehouse=warehouse,
        graph=planner_graph(context.repository_def.asset_graph),
        policy=policy,
        now=now,
        today=today_et(now),
        calendar=calendar,
        say=context.log.info,
    )
    return dg.SensorResult(
        run_requests=requests, skip_reason=None if requests else summary, cursor=cursor
    )


def _verify_sensor(name: str, status: dg.DagsterRunStatus) -> dg.RunStatusSensorDefinition:
    @dg.run_status_sensor(
        name=name,
        run_status=status,
        monitored_jobs=[heal_job],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Record the outcome of heal runs that end in {status.value}.",
    )
    def _sensor(context: dg.RunStatusSensorContext, warehouse: WarehouseResource):
        with warehouse.open(JobContext("verify")) as wh:
            result = verify(context.instance, context.dagster_run, wh)
        if result is None:
            return dg.SkipReason(f"run {context.dagster_run.run_id} is not a sensor heal")
        outcome, reason, _ = result
        context.log.info(f"heal run {context.dagster_run.run_id}: {outcome}: {reason}")
        return None

    return _sensor


def heal_sensor(interval_seconds: int, policy: heal_state.Policy) -> dg.SensorDefinition:
    def _sensor(
        context: dg.SensorEvaluationContext,
        warehouse: WarehouseResource,
        source: Phase1SourceResource,
    ):
        with warehouse.open(JobContext("heal")) as wh:
            return heal_tick(context, wh, policy, calendar=source.scheduled_games)

    with accepted(dg.BetaWarning):
        return dg.sensor(
            name=HEAL_SENSOR,
            jobs=[heal_job],
            minimum_interval_seconds=interval_seconds,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=(
                "Heal failed check results: plan the failed partitions, their broken inputs and "
                f"what reads them; retry with back-off, at most {policy.max_attempts} attempts "
                "per target a day, then give up once."
            ),
        )(_sensor)


ALERT_BUDGET_SECONDS = 40  # within Dagster's 60 s sensor deadline, whatever Slack does


@dg.sensor(
    name=ALERTS_SENSOR,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Tell each incident's story once: its message, a reply per attempt, its status, and a "
        "page when a person is needed; off the heal sensor's path, so Slack never delays a heal."
    ),
)
def alerts_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, alerts: AlertsResource
) -> dg.SkipReason:
    with warehouse.open(JobContext("alerts")) as wh:
        sent = alerts.notifier(wh, echo=context.log.info).deliver(
            budget_seconds=ALERT_BUDGET_SECONDS
        )
    return dg.SkipReason(f"{len(sent)} alert(s) sent" if sent else "no alerts owed")


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    policy = heal_state.Policy(
        max_attempts=settings.heal_max_attempts,
        backoff_seconds=settings.heal_backoff_seconds,
        group_wait_seconds=settings.heal_group_wait_seconds,
    )
    return dg.Definitions(
        jobs=[heal_job],
        sensors=[
            heal_sensor(settings.heal_interval_seconds, policy),
            *(
                _verify_sensor(name, dg.DagsterRunStatus[status])
                for status, name in OUTCOME_SENSORS.items()
            ),
            alerts_sensor,
        ],
    )
