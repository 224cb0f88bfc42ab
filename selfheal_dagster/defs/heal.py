"""Healing: ``heal_job``, the heal sensor that launches it, and the sensors that verify it.

The heal sensor reads check results newer than its cursor (failures from the sweep, from
materialising runs, from a check run in the UI), applies the guards and the pure planner
(lib/healing.py, lib/planner.py), records "triggered" in the heal history and requests one run
per date. The run-status sensors record each heal run's outcome: healed when the run's checks
passed, failed otherwise. Every side effect is keyed so that a re-run tick repeats nothing.
"""

import warnings
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime

import dagster as dg
from dagster._core.events import DagsterEventType

from selfheal_dagster.defs.checks import check_key
from selfheal_dagster.defs.resources import AlertsResource, WarehouseResource
from selfheal_dagster.lib import check_records, healing, planner
from selfheal_dagster.lib.alerts import LogSink, Notifier
from selfheal_dagster.lib.checks import CHECKS, HEALABLE
from selfheal_dagster.lib.dates import EASTERN, now_utc, today_et
from selfheal_dagster.lib.history import FINAL, Outcome
from selfheal_dagster.lib.settings import Settings
from selfheal_dagster.lib.warehouse import Warehouse
from selfheal_dagster.tables import PHASE_GROUPS, TABLES, execution_order

HEAL_JOB = "heal_job"
PHASES = {t.key: t.phase for t in TABLES}
CHECK_KEYS = [check_key(t, name) for t in TABLES for name in CHECKS]
IN_FLIGHT = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)

heal_job = dg.define_asset_job(
    HEAL_JOB,
    selection=dg.AssetSelection.groups(*PHASE_GROUPS.values()),
    description=(
        "Re-materialise the selected tables of one date in dependency order. The heal sensor "
        "launches it with the planned selection; people can backfill it for a range."
    ),
)


def planner_graph(asset_graph) -> planner.Graph:
    """Dependencies and date offsets from Dagster's asset graph; order from the registry."""
    deps: dict[str, list[tuple[str, int, int]]] = {}
    for key in asset_graph.get_all_asset_keys():
        for parent in asset_graph.get(key).parent_keys:
            mapping = asset_graph.get_partition_mapping(key, parent)
            offsets = (
                (mapping.start_offset, mapping.end_offset)
                if isinstance(mapping, dg.TimeWindowPartitionMapping)
                else (0, 0)
            )
            deps.setdefault(key.to_user_string(), []).append((parent.to_user_string(), *offsets))
    return planner.from_dependencies([t.key for t in execution_order()], deps)


def existing_partitions(warehouse: Warehouse, start: date, end: date):
    """``exists(asset, day)``: the partition holds rows (one query per table, read once)."""
    stats = warehouse.window_stats(list(TABLES), start, end)
    by_key = {t.key: stats[t.name] for t in TABLES}

    def exists(asset: str, day: date) -> bool:
        found = by_key.get(asset, {}).get(day)
        return bool(found and found.rows)

    return exists


def _day_start(today: date) -> datetime:
    return datetime.combine(today, datetime.min.time(), tzinfo=EASTERN).astimezone(UTC)


def last_passed(
    instance: dg.DagsterInstance, failures: Iterable[healing.Failure]
) -> dict[tuple[str, date], datetime]:
    """When each failing target's check last passed: a pass means the data changed (a person
    or a heal fixed it), so attempts count again from there."""
    out: dict[tuple[str, date], datetime] = {}
    for f in {(f.asset, f.day, f.check): f for f in failures}.values():
        key = dg.AssetCheckKey(dg.AssetKey.from_user_string(f.asset), f.check)
        found = check_records.history(instance, key, f.day, limit=1, passed_only=True)
        if found and found[0].event is not None:
            # The event's own time: the record's create_timestamp is truncated to seconds.
            at = datetime.fromtimestamp(found[0].event.timestamp, UTC)
            out[(f.asset, f.day)] = max(at, out.get((f.asset, f.day), at))
    return out


def target_runs(
    instance: dg.DagsterInstance,
    days: Iterable[date],
    today: date,
    passed: dict[tuple[str, date], datetime],
) -> dict[tuple[str, date], healing.TargetRuns]:
    """Heal runs per (asset, date) created today (US/Eastern) after its check last passed."""
    days = sorted({d.isoformat() for d in days})
    if not days:
        return {}
    records = instance.get_run_records(
        dg.RunsFilter(
            job_name=HEAL_JOB,
            tags={healing.TARGET_DATE: days},
            created_after=_day_start(today),
        )
    )
    out: dict[tuple[str, date], healing.TargetRuns] = {
        target: healing.TargetRuns(passed_at=at) for target, at in passed.items()
    }
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        day = date.fromisoformat(run.tags[healing.TARGET_DATE])
        for key in run.asset_selection or ():
            asset = key.to_user_string()
            seen = out.get((asset, day), healing.TargetRuns())
            if seen.passed_at and record.create_timestamp <= seen.passed_at:
                continue
            ended = datetime.fromtimestamp(record.end_time, UTC) if record.end_time else None
            out[(asset, day)] = healing.TargetRuns(
                attempts=seen.attempts + 1,
                last_ended=max(filter(None, (seen.last_ended, ended)), default=None),
                in_flight=run.run_id if run.status in IN_FLIGHT else seen.in_flight,
                passed_at=seen.passed_at,
            )
    return out


def prerequisite_status(instance: dg.DagsterInstance, run_keys: Sequence[str]) -> dict[str, str]:
    if not run_keys:
        return {}
    records = instance.get_run_records(
        dg.RunsFilter(job_name=HEAL_JOB, tags={healing.RUN_KEY: sorted(set(run_keys))})
    )
    out = {}
    for record in records:
        status = record.dagster_run.status
        name = status.value if status.value in ("SUCCESS", "FAILURE", "CANCELED") else "IN_FLIGHT"
        out[record.dagster_run.tags[healing.RUN_KEY]] = name
    return out


def read_results(
    instance: dg.DagsterInstance, state: healing.State
) -> tuple[list[healing.Failure], int]:
    """New healable failures since the cursor, and the next watermark.

    A check record gets its id when the check is planned and its result later, in place, so
    the watermark must stay below any record still planned in a run that is in flight.
    """
    seen = set(state.seen)
    fresh = [
        r
        for r in check_records.newer_than(instance, CHECK_KEYS, state.watermark or 0)
        if r.id not in seen
    ]
    planned = [r for r in fresh if check_records.is_planned(r)]
    running = set()
    if planned:
        runs = instance.get_run_records(dg.RunsFilter(run_ids=sorted({r.run_id for r in planned})))
        running = {r.dagster_run.run_id for r in runs if r.dagster_run.status in IN_FLIGHT}
    floor = min((r.id for r in planned if r.run_id in running), default=None)
    failures, handled = [], []
    for record in fresh:
        if check_records.is_planned(record):
            if record.run_id not in running:
                handled.append(record.id)  # its run ended without evaluating it
            continue
        handled.append(record.id)
        evaluation = check_records.evaluation(record)
        if evaluation is None or evaluation.partition is None:
            continue
        asset, day = evaluation.asset_key.to_user_string(), date.fromisoformat(evaluation.partition)
        status = evaluation.metadata.get("status")
        if (
            not evaluation.passed
            and evaluation.severity == dg.AssetCheckSeverity.ERROR
            and (status is None or status.value in HEALABLE)
        ):
            failures.append(
                healing.Failure(
                    record_id=record.id,
                    asset=asset,
                    day=day,
                    check=evaluation.check_name,
                    reason=evaluation.description or (status.value if status else "failed"),
                    detected_at=datetime.fromtimestamp(record.event.timestamp, UTC),
                )
            )
    top = max([state.watermark or 0, *handled])
    watermark = top if floor is None else min(top, floor - 1)
    state.seen = sorted({*state.seen, *handled} - set(range(0, watermark + 1)))
    return failures, watermark


def heal_tick(
    context: dg.SensorEvaluationContext,
    warehouse: Warehouse,
    policy: healing.Policy,
    now: datetime | None = None,
    notifier: Notifier | None = None,
) -> dg.SensorResult:
    """One heal sensor tick (``now`` only for rehearsing another day)."""
    notifier = notifier or Notifier(LogSink(), warehouse)
    instance = context.instance
    state = healing.State.from_json(context.cursor)
    if state.watermark is None:
        state.watermark = check_records.newest_id(instance, CHECK_KEYS)
        return dg.SensorResult(
            skip_reason=f"first tick: healing failures recorded after check record "
            f"{state.watermark}",
            cursor=state.to_json(),
        )
    now = now or now_utc()
    today = today_et(now)
    failures, state.watermark = read_results(instance, state)
    days = {f.day for f in failures} | {date.fromisoformat(p.day) for p in state.pending}
    runs = target_runs(instance, days, today, last_passed(instance, failures))
    pending_keys = [k for p in state.pending for k in p.after]
    exists = (
        existing_partitions(warehouse, min(f.day for f in failures), today)
        if failures
        else (lambda asset, day: False)
    )
    decision = healing.decide(
        state=state,
        failures=failures,
        runs=runs,
        prerequisite_status=prerequisite_status(instance, pending_keys),
        graph=planner_graph(context.repository_def.asset_graph),
        exists=exists,
        phases=PHASES,
        now=now,
        today=today,
        policy=policy,
    )
    # History first, alerts after; a record already stored (a re-run tick) is not announced.
    for record in decision.records:
        if warehouse.insert_history(record):
            notifier.triggered(record)
    for record in decision.escalations:
        context.log.warning(f"gave up: {record.target_date} {record.healing_result.reason}")
        if warehouse.insert_history(record):
            notifier.outcome(record)
    for pending in decision.dropped:
        for record in resolve(
            warehouse,
            date.fromisoformat(pending.day),
            pending.tags[healing.CORRELATION_ID],
            Outcome.SKIPPED,
            "not run: the heal it waited for did not succeed",
            phases=[int(p) for p in pending.tags[healing.PHASE].split(",")],
        ):
            notifier.outcome(record)
    for cid in sorted({launch.tags[healing.CORRELATION_ID] for launch in decision.launch}):
        mine = [launch for launch in decision.launch if launch.tags[healing.CORRELATION_ID] == cid]
        context.log.info(f"correlation {cid}: {len(mine)} heal run(s) requested")
    for reason in decision.skipped:
        context.log.info(f"skipped: {reason}")
    requests = [
        dg.RunRequest(
            run_key=launch.run_key,
            job_name=HEAL_JOB,
            partition_key=launch.day.isoformat(),
            asset_selection=[dg.AssetKey.from_user_string(a) for a in launch.assets],
            tags=launch.tags,
        )
        for launch in decision.launch
    ]
    skip = None
    if not requests:
        skip = "; ".join(decision.skipped) or (
            f"{len(decision.escalations)} target(s) given up"
            if decision.escalations
            else "no new failed checks"
        )
    return dg.SensorResult(run_requests=requests, skip_reason=skip, cursor=state.to_json())


def resolve(
    warehouse: Warehouse,
    day: date,
    correlation_id: str,
    outcome: Outcome,
    reason: str,
    phases: Iterable[int],
    run_id: str | None = None,
) -> list:
    """Record the outcome on the history records of this heal (idempotent)."""
    wanted = {f"phase{p}" for p in phases}
    done = []
    for record in warehouse.history(day=day, correlation_id=correlation_id):
        if record.phase in wanted and record.outcome not in FINAL:
            resolved = record.resolved(outcome, now_utc(), reason, run_id)
            warehouse.update_history(resolved)
            done.append(resolved)
    return done


def judge(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[Outcome, str]:
    """Healed when the run succeeded and every check it ran passes (warnings aside)."""
    if run.status != dg.DagsterRunStatus.SUCCESS:
        from selfheal_dagster.runs import error_summary

        failures = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
        errors = [
            f"{e.step_key}: {error_summary(e.dagster_event.step_failure_data.error)}"
            for e in failures
            if e.dagster_event and e.dagster_event.step_failure_data.error
        ]
        return Outcome.FAILED, "; ".join(errors) or f"run {run.status.value.lower()}"
    results = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    still = []
    for entry in results:
        ev = entry.dagster_event.event_specific_data
        if not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR:
            still.append(f"{ev.asset_key.to_user_string()} {ev.check_name}: {ev.description}")
    if still:
        return Outcome.FAILED, "run succeeded but checks still fail: " + "; ".join(still)
    return Outcome.HEALED, f"{len(results)} check result(s) in the run, none failing"


def verify(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    warehouse: Warehouse,
    notifier: Notifier | None = None,
) -> tuple[Outcome, str, list] | None:
    """Record (and announce) a finished heal run's outcome; None for runs no heal launched."""
    cid = run.tags.get(healing.CORRELATION_ID)
    if not cid:
        return None
    outcome, reason = judge(instance, run)
    day = date.fromisoformat(run.tags[healing.TARGET_DATE])
    phases = {PHASES[k.to_user_string()] for k in run.asset_selection or ()}
    records = resolve(warehouse, day, cid, outcome, reason, phases, run.run_id)
    notifier = notifier or Notifier(LogSink(), warehouse)
    for record in records:  # only records that were still open: a re-run says nothing twice
        notifier.outcome(record)
    return outcome, reason, records


def _verify_sensor(name: str, status: dg.DagsterRunStatus) -> dg.RunStatusSensorDefinition:
    @dg.run_status_sensor(
        name=name,
        run_status=status,
        monitored_jobs=[heal_job],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Record the outcome of heal runs that end in {status.value}.",
    )
    def _sensor(
        context: dg.RunStatusSensorContext, warehouse: WarehouseResource, alerts: AlertsResource
    ):
        wh = warehouse.open()
        notifier = alerts.notifier(wh, echo=context.log.info)
        result = verify(context.instance, context.dagster_run, wh, notifier)
        if result is None:
            return dg.SkipReason(f"run {context.dagster_run.run_id} is not a sensor heal")
        outcome, reason, _ = result
        context.log.info(f"heal run {context.dagster_run.run_id}: {outcome}: {reason}")
        return None

    return _sensor


def heal_sensor(interval_seconds: int, policy: healing.Policy) -> dg.SensorDefinition:
    def _sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource, alerts: AlertsResource
    ):
        wh = warehouse.open()
        return heal_tick(context, wh, policy, notifier=alerts.notifier(wh, echo=context.log.info))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.sensor(
            name="heal_sensor",
            jobs=[heal_job],
            minimum_interval_seconds=interval_seconds,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=(
                "Heal failed check results: plan the failed partitions and what reads them, "
                f"at most {policy.max_attempts} attempts per target a day, then give up."
            ),
        )(_sensor)


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    policy = healing.Policy(
        max_attempts=settings.heal_max_attempts, backoff_seconds=settings.heal_backoff_seconds
    )
    return dg.Definitions(
        jobs=[heal_job],
        sensors=[
            heal_sensor(settings.heal_interval_seconds, policy),
            _verify_sensor("heal_outcome_success", dg.DagsterRunStatus.SUCCESS),
            _verify_sensor("heal_outcome_failure", dg.DagsterRunStatus.FAILURE),
        ],
    )
