"""The heal loop's I/O around the pure decision (``core/healing.py``): gather, then apply.

``gather`` does every read of the instance and the warehouse a tick needs, and changes
nothing; ``apply`` is the only function that writes a decision's effects (history records,
resolved outcomes, gave-up run tags) and returns the run requests; the cursor is written by
Dagster from what ``tick`` returns. Alerts leave later, from the history, through
``Notifier.deliver``. The outcome sensors record a finished run's verdict (``verify``, with
the rules of ``core/verdicts.py``); ``selfheal heal`` (``runs.heal_now``) uses the same
planner, records, run requests and ``verify``, run by run in this process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import dagster as dg

from selfheal_dagster.adapters.warehouse import HistoryReader, StatsReader, Warehouse, read_window
from selfheal_dagster.core import claims, heal_state, healing, names, planner, results, verdicts
from selfheal_dagster.core.checks import (
    CHECKS,
    EVALUATORS,
    HISTORY_DAYS,
    READ_AT,
    Calendar,
    broken_map,
)
from selfheal_dagster.core.coverage import Window
from selfheal_dagster.core.dates import now_utc, partition_tags, tag_days
from selfheal_dagster.core.errors import error_summary
from selfheal_dagster.core.history import FINAL, OUTCOME_COLUMNS, Outcome
from selfheal_dagster.core.names import (
    DAGSTER_RUN_KEY,
    HEAL_JOB,
    OUTCOME_TAG,
    REASON_TAG,
    SWEEP_JOB,
    WRITE_NO_TABLE,
)
from selfheal_dagster.core.text import LINE_LIMIT, more, one_line
from selfheal_dagster.instance import check_records
from selfheal_dagster.tables import BY_KEY, TABLES, execution_order

PHASES = {t.key: t.phase for t in TABLES}
CHECK_KEYS = [dg.AssetCheckKey(dg.AssetKey(t.key_path), name) for t in TABLES for name in CHECKS]
IN_FLIGHT = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
# A sequential backfill is between two of its runs for a moment: its range stays claimed
# this long after a run of it that was not its last ended (longer: its process died).
BACKFILL_GAP = timedelta(minutes=2)
log = logging.getLogger("selfheal.heal")


def planner_graph(asset_graph) -> planner.Graph:
    """Dependencies and date offsets from Dagster's asset graph; order from the registry."""
    deps: dict[str, list[tuple[str, int, int]]] = {}
    for key in asset_graph.get_all_asset_keys():
        if key.to_user_string() not in BY_KEY:  # the heal metrics: never healed
            continue
        for parent in asset_graph.get(key).parent_keys:
            mapping = asset_graph.get_partition_mapping(key, parent)
            offsets = (
                (mapping.start_offset, mapping.end_offset)
                if isinstance(mapping, dg.TimeWindowPartitionMapping)
                else (0, 0)
            )
            deps.setdefault(key.to_user_string(), []).append((parent.to_user_string(), *offsets))
    return planner.from_dependencies([t.key for t in execution_order()], deps)


@dataclass(frozen=True)
class WarehouseView:
    """One read of every table over the dates a tick looks at: which partitions exist, when
    each was last written, which inputs of a partition are broken; and the data ``decide``
    is given from it (``world``)."""

    window: Window
    calendar: Calendar | None

    @classmethod
    def read(
        cls, warehouse: StatsReader, days: Iterable[date], today: date, calendar: Calendar | None
    ) -> WarehouseView:
        days = sorted(set(days)) or [today]
        back = max(t.lookback_days for t in TABLES) + HISTORY_DAYS
        start = min(days[0], today) - timedelta(days=back)
        return cls(read_window(warehouse, start, max(today, days[-1]), TABLES), calendar)

    def exists(self, asset: str, day: date) -> bool:
        return self.window.rows(BY_KEY[asset], day) > 0

    def loaded_at(self, asset: str, day: date) -> datetime | None:
        found = self.window.stats.get(BY_KEY[asset].name, {}).get(day)
        return found.loaded_at if found else None

    def broken(self) -> dict[planner.Partition, tuple[planner.Partition, ...]]:
        """Every partition's broken inputs, where the window holds what judging them needs."""
        start = self.window.start
        judgeable = {t.name: start + timedelta(days=t.lookback_days + HISTORY_DAYS) for t in TABLES}
        return broken_map(self.window, self.calendar, judgeable)

    def world(
        self,
        graph: planner.Graph,
        today: date,
        checks: Iterable[tuple[str, date, str]],
        now: datetime,
    ) -> heal_state.World:
        """The tick's world as data: what exists, what is broken, and which of ``checks``
        pass on this read of the warehouse (what the sweep would say now)."""
        existing = {
            (t.key, d)
            for t in TABLES
            for d, s in self.window.stats.get(t.name, {}).items()
            if s.rows
        }
        passing = {
            (asset, day, check)
            for asset, day, check in checks
            if EVALUATORS[check](BY_KEY[asset], day, self.window, now, self.calendar).passed
        }
        return heal_state.World(
            graph=graph,
            phases=PHASES,
            today=today,
            existing=frozenset(existing),
            broken=self.broken(),
            passing=frozenset(passing),
        )


@dataclass(frozen=True)
class Results:
    """What the check records since the cursor say (judged by ``core/results.py``): new
    healable failures, the newest new pass per (asset, date, check), the cursor's advance."""

    failures: list[heal_state.Failure]
    passes: dict[tuple[str, date, str], datetime]
    pass_runs: dict[tuple[str, date, str], str]  # the run that recorded each newest pass
    watermark: int | None  # None: no records were read (a person's heal)
    seen: tuple[int, ...] = ()


def check_result(record: check_records.AssetCheckExecutionRecord) -> results.CheckResult | None:
    """A finished record's partitioned evaluation, as the loop judges it (None: nothing to
    heal from it)."""
    evaluation = check_records.evaluation(record)
    if evaluation is None or evaluation.partition is None:
        return None
    at = datetime.fromtimestamp(record.event.timestamp, UTC)
    status = evaluation.metadata.get("status")
    read = evaluation.metadata.get(READ_AT)
    return results.CheckResult(
        record_id=record.id,
        asset=evaluation.asset_key.to_user_string(),
        day=date.fromisoformat(evaluation.partition),
        check=evaluation.check_name,
        passed=evaluation.passed,
        status=status.value if status is not None else None,
        reason=evaluation.description or (status.value if status else "failed"),
        at=at,
        read_at=datetime.fromtimestamp(read.value, UTC) if read is not None else at,
        run_id=record.run_id,
    )


def read_results(
    instance: dg.DagsterInstance,
    state: heal_state.State,
    view_for: Callable[[set[date]], WarehouseView],
) -> tuple[Results, WarehouseView]:
    """The check records since the cursor, judged (``core/results.py``), and one warehouse
    read over the dates they and the loop's targets concern."""
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
    # A planned record whose run ended without evaluating it is handled too.
    handled = [r.id for r in fresh if not check_records.is_planned(r) or r.run_id not in running]
    found = [c for r in fresh if not check_records.is_planned(r) and (c := check_result(r))]
    view = view_for({r.day for r in found if r.healable} | state.days())
    watermark, above = results.advance(state.watermark, state.seen, handled, floor)
    failures = results.new_failures(found, view.loaded_at)
    passes = results.newest_passes(found)
    return Results(failures, passes, results.pass_runs(found), watermark, above), view


def run_days(run: dg.DagsterRun) -> list[date]:
    """The dates a run computes: its partition, or its partition range."""
    return tag_days(run.tags)


def healed_partitions(
    instance: dg.DagsterInstance, run: dg.DagsterRun
) -> tuple[frozenset[planner.Partition], list[str]]:
    """The (asset, date) partitions a run wrote whose every check in the run passed, and
    what failed (one line per failing asset and check)."""
    days = run_days(run)

    def partitions(key: dg.AssetKey, partition: str | None) -> list[planner.Partition]:
        asset = key.to_user_string()
        if partition is None:  # a one-date run files its results under the run's date
            return [(asset, d) for d in days]
        return [(asset, date.fromisoformat(partition))]

    written: set[planner.Partition] = set()
    for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        if e.dagster_event:
            m = e.dagster_event.event_specific_data.materialization
            written.update(partitions(m.asset_key, m.partition))
    failing: set[planner.Partition] = set()
    lines: dict[tuple[str, str], list[str]] = {}
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        ev = entry.dagster_event.event_specific_data
        if not ev.passed:
            found = partitions(ev.asset_key, ev.partition)
            failing.update(found)
            lines.setdefault((ev.asset_key.to_user_string(), ev.check_name), []).append(
                f"{found[0][1]}: {ev.description}" if ev.partition else str(ev.description)
            )
    reasons = [
        f"{asset} {check}: "
        + "; ".join(why[:3])
        + (f" ({more(len(why) - 3)})" if len(why) > 3 else "")
        for (asset, check), why in lines.items()
    ]
    return frozenset(written - failing), reasons


def run_statuses(
    instance: dg.DagsterInstance, run_keys: Sequence[str]
) -> dict[str, heal_state.RunStatus]:
    if not run_keys:
        return {}
    records = instance.get_run_records(
        dg.RunsFilter(job_name=HEAL_JOB, tags={names.RUN_KEY: sorted(set(run_keys))})
    )
    out = {}
    for record in records:
        run = record.dagster_run
        key = run.tags[names.RUN_KEY]
        if run.status in IN_FLIGHT:
            out[key] = heal_state.RunStatus(heal_state.RunState.IN_FLIGHT)
            continue
        ended = datetime.fromtimestamp(record.end_time or record.update_timestamp.timestamp(), UTC)
        healed, failing = healed_partitions(instance, run)
        ok = run.status == dg.DagsterRunStatus.SUCCESS
        outcome, why = (Outcome.HEALED, "") if ok else judge(instance, run)
        out[key] = heal_state.RunStatus(
            heal_state.RunState.SUCCESS if ok else heal_state.RunState.FAILURE,
            ended,
            healed,
            "; ".join(failing) or why,
            held=outcome is Outcome.SKIPPED,
            run_id=run.run_id,
        )
    return out


def run_info(run: dg.DagsterRun) -> claims.RunInfo:
    assets = tuple(k.to_user_string() for k in run.asset_selection or ())
    return claims.RunInfo(run.run_id, run.job_name, run.tags, assets)


def busy_partitions(instance: dg.DagsterInstance, now: datetime) -> dict[planner.Partition, str]:
    """Every (asset, date) a run in flight will write, whatever launched it: heals, the
    materialising CLI, backfills (their whole range, also between two of their runs)."""
    in_flight = instance.get_run_records(dg.RunsFilter(statuses=list(IN_FLIGHT)))
    recent = instance.get_run_records(dg.RunsFilter(updated_after=now - BACKFILL_GAP))
    between = claims.between_steps(run_info(r.dagster_run) for r in recent)
    return claims.claims(
        [*(run_info(r.dagster_run) for r in in_flight), *between],
        tables=[t.key for t in TABLES],
        write_no_table=WRITE_NO_TABLE,
    )


class TickReader(StatsReader, HistoryReader, Protocol):
    """All ``gather`` reads of a warehouse: partition stats and the heal history (a tick's
    reads are typed by what they read, as a plan builder takes a state reader; a write is
    not among them)."""


def gather(
    instance: dg.DagsterInstance,
    state: heal_state.State,
    warehouse: TickReader,
    *,
    graph: planner.Graph,
    today: date,
    now: datetime,
    calendar: Calendar | None = None,
    found: Sequence[heal_state.Failure] | None = None,
) -> tuple[heal_state.Observation, heal_state.World]:
    """Everything a tick decides on, read once and turned into frozen values; it changes
    nothing and decides nothing (the cursor's advance is in the observation, for ``decide``).

    ``found``: the failures a person's heal evaluated itself; the check records are not
    read (the cursor does not move)."""

    def view_for(days: Iterable[date]) -> WarehouseView:
        return WarehouseView.read(warehouse, days, today, calendar)

    if found is None:
        results, view = read_results(instance, state, view_for)
    else:
        results = Results(list(found), {}, {}, None)
        view = view_for({f.day for f in found} | state.days())
    sweeping = instance.get_run_records(
        dg.RunsFilter(job_name=SWEEP_JOB, statuses=list(IN_FLIGHT)), limit=1
    )
    statuses = run_statuses(instance, state.run_keys())
    observation = heal_state.Observation(
        failures=results.failures,
        passes=results.passes,
        passed_by=incidents_of(instance, results.pass_runs),
        runs=statuses,
        paged=open_pages(warehouse, healed_now(state, statuses)),
        busy=busy_partitions(instance, now),
        sweeping=bool(sweeping),
        watermark=results.watermark,
        seen=results.seen,
    )
    checks = {(t.asset, t.day, t.check) for t in state.targets.values()}
    checks |= {(f.asset, f.day, f.check) for f in results.failures}
    return observation, view.world(graph, today, checks, now)


def healed_now(
    state: heal_state.State, statuses: Mapping[str, heal_state.RunStatus]
) -> set[planner.Partition]:
    """The targets whose run ended having healed them: the ones a page may wait on."""
    return {
        t.partition
        for t in state.targets.values()
        if t.run_key in statuses and t.partition in statuses[t.run_key].healed
    }


def open_pages(
    warehouse: HistoryReader, partitions: Iterable[planner.Partition]
) -> dict[planner.Partition, str]:
    """Which of ``partitions`` an incident gave up on and paged for, with no answer yet:
    the paging incident's correlation ID (the newest, if several). Reads the history only
    for the dates of ``partitions`` (none: no read)."""
    wanted = set(partitions)
    out: dict[planner.Partition, str] = {}
    for day in sorted({d for _, d in wanted}):
        records = warehouse.history(day=day)  # newest first
        answered = {
            (r.correlation_id, a) for r in records if r.outcome is Outcome.FIXED for a in r.assets
        }
        for r in records:
            for asset in r.assets if r.outcome is Outcome.GAVE_UP else ():
                if (asset, day) in wanted and (r.correlation_id, asset) not in answered:
                    out.setdefault((asset, day), r.correlation_id)
    return out


def incidents_of(
    instance: dg.DagsterInstance, run_ids: Mapping[tuple[str, date, str], str]
) -> dict[tuple[str, date, str], str]:
    """The heal incident (correlation ID) of each run, where a heal launched it."""
    if not run_ids:
        return {}
    records = instance.get_run_records(dg.RunsFilter(run_ids=sorted(set(run_ids.values()))))
    cids = {
        r.dagster_run.run_id: r.dagster_run.tags[names.CORRELATION_ID]
        for r in records
        if names.CORRELATION_ID in r.dagster_run.tags
    }
    return {key: cids[run] for key, run in run_ids.items() if run in cids}


def judge(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[Outcome, str]:
    """The run's verdict (``core/verdicts.py``) from its event log."""
    return verdicts.verdict(run_events(instance, run))


def run_events(instance: dg.DagsterInstance, run: dg.DagsterRun) -> verdicts.RunEvents:
    """What a finished run's event log says, as ``verdicts.verdict`` reads it."""
    succeeded = run.status == dg.DagsterRunStatus.SUCCESS
    if not succeeded:
        failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        errors = [
            f"{e.step_key}: {error_summary(e.dagster_event.step_failure_data.error)}"
            for e in failures
            if e.dagster_event and e.dagster_event.step_failure_data.error
        ]
        messages = []
        if not errors:
            ended = instance.all_logs(
                run.run_id,
                of_type={dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED},
            )
            messages = [e.dagster_event.message for e in ended[-1:] if e.dagster_event]
        return verdicts.RunEvents(False, run.status.value, errors, messages)
    checks = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = [entry.dagster_event.event_specific_data for entry in checks]
    failing = [
        f"{ev.asset_key.to_user_string()} {ev.check_name}: {ev.description}"
        for ev in evaluations
        if not ev.passed
    ]
    return verdicts.RunEvents(
        True, run.status.value, failing_checks=failing, check_results=len(checks)
    )


def resolve(
    warehouse: Warehouse,
    day: date,
    correlation_id: str,
    outcome: Outcome,
    reason: str,
    phases: Iterable[int],
    *,
    now: datetime,
    run_id: str | None = None,
    attempt: int | None = None,
) -> list:
    """Record the outcome on the still-open history records of this heal (idempotent): of
    its ``attempt`` when given (an incident's records of an earlier attempt are not its)."""
    wanted = {f"phase{p}" for p in phases}
    done = []
    for record in warehouse.history(day=day, correlation_id=correlation_id):
        if attempt is not None and record.attempt != attempt:
            continue
        if record.phase in wanted and record.outcome not in FINAL:
            resolved = record.resolved(outcome, now, reason, run_id)
            warehouse.update_history(resolved, OUTCOME_COLUMNS)
            done.append(resolved)
    return done


def tag_outcome(instance: dg.DagsterInstance, run_id: str, outcome: Outcome, reason: str) -> None:
    """The heal's outcome on its run, so the UI's run list filters on it
    (``selfheal/outcome: failed``) and the run's page says what happened."""
    instance.add_run_tags(run_id, {OUTCOME_TAG: str(outcome), REASON_TAG: one_line(reason)})


def tag_gave_up(instance: dg.DagsterInstance, run_keys: Iterable[str]) -> None:
    """The last attempt of a target given up on: its run says so."""
    for key in run_keys:
        for run in instance.get_runs(dg.RunsFilter(tags={DAGSTER_RUN_KEY: key}), limit=5):
            reason = run.tags.get(REASON_TAG, "")
            tag_outcome(instance, run.run_id, Outcome.GAVE_UP, f"last attempt; {reason}")


def verify(
    instance: dg.DagsterInstance, run: dg.DagsterRun, warehouse: Warehouse
) -> tuple[Outcome, str, list] | None:
    """Record a finished heal run's outcome on its open history records, per date and phase
    (``verdicts.per_phase``), and on its tags; the alerts sensor announces them. None for
    runs no heal launched."""
    cid = run.tags.get(names.CORRELATION_ID)
    if not cid:
        return None
    said = judge(instance, run)
    record = instance.get_run_record_by_id(run.run_id)
    ended = (
        datetime.fromtimestamp(record.end_time, UTC) if record and record.end_time else now_utc()
    )
    attempt = int(run.tags[names.ATTEMPT]) if names.ATTEMPT in run.tags else None
    healed, _ = healed_partitions(instance, run)
    phase_outcomes = verdicts.per_phase(
        said,
        days=run_days(run) or [date.fromisoformat(run.tags[names.TARGET_DATE])],
        assets=[k.to_user_string() for k in run.asset_selection or ()],
        healed=healed,
        phases=PHASES,
    )
    records = []
    for day, phase, outcome, reason in phase_outcomes:
        records += resolve(
            warehouse,
            day,
            cid,
            outcome,
            reason,
            [phase],
            now=ended,
            run_id=run.run_id,
            attempt=attempt,
        )
    outcome, reason = verdicts.overall(said, [r.outcome for r in records])
    tag_outcome(instance, run.run_id, outcome, reason)
    return outcome, reason, records


def run_request(launch: heal_state.Launch) -> dg.RunRequest:
    """The heal run of a launch: one partition, or a partition range (single-run policy)."""
    return dg.RunRequest(
        run_key=launch.run_key,
        job_name=HEAL_JOB,
        partition_key=None if launch.last else launch.day.isoformat(),
        asset_selection=[dg.AssetKey.from_user_string(a) for a in launch.assets],
        tags={**launch.tags, **(partition_tags(launch.days) if launch.last else {})},
    )


def apply(
    decision: heal_state.Decision,
    *,
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
    say: Callable[[str], None] = log.info,
) -> list[dg.RunRequest]:
    """Every side effect of a decision: the history records (inserted only if new, so a
    re-run tick writes nothing twice), the outcomes they resolve, the gave-up tags of the
    last attempts' runs, then the run requests. Alerts are not sent here: the alerts sensor
    sends what the history owes (``Notifier.deliver``), off the tick's path."""
    for record in decision.escalations:
        say(f"gave up: {record.target_date} {record.healing_result.reason}")
    # One write: the alerts sensor sees a tick's records of an incident all, or none yet.
    warehouse.insert_histories([*decision.records, *decision.escalations, *decision.closing])
    for r in decision.resolutions:
        resolve(
            warehouse,
            r.day,
            r.correlation_id,
            r.outcome,
            r.reason,
            r.phases,
            now=r.at or now_utc(),
            attempt=r.attempt,
        )
    tag_gave_up(instance, decision.gave_up_runs)
    for line in decision.closed:
        say(f"closed: {line}")
    for line in decision.skipped:
        say(f"skipped: {line}")
    return [run_request(launch) for launch in decision.launch]


def summary(decision: heal_state.Decision) -> str:
    """The tick's one line: the first reason it waited (each is in the tick's log), else
    what it closed or gave up."""
    if decision.skipped:
        rest = len(decision.skipped) - 1
        suffix = f" ({more(rest)})" if rest else ""
        return one_line(decision.skipped[0], LINE_LIMIT - len(suffix)) + suffix
    if decision.escalations:
        return f"{len(decision.escalations)} target(s) given up"
    return one_line("; ".join(decision.closed)) or "no new failed checks"


def tick(
    *,
    instance: dg.DagsterInstance,
    cursor: str | None,
    warehouse: Warehouse,
    graph: planner.Graph,
    policy: heal_state.Policy,
    now: datetime,
    today: date,
    calendar: Calendar | None = None,
    say: Callable[[str], None] = log.info,
) -> tuple[list[dg.RunRequest], str | None, str]:
    """gather -> decide -> apply: run requests, the next cursor, and what the tick did."""
    state = heal_state.State.from_json(cursor)
    if state.watermark is None:
        first = check_records.newest_id(instance, CHECK_KEYS)
        cursor = state.with_watermark(first).to_json()
        return [], cursor, f"first tick: healing failures recorded after check record {first}"
    observation, world = gather(
        instance, state, warehouse, graph=graph, today=today, now=now, calendar=calendar
    )
    state, decision = healing.decide(state, observation, world, now, policy)
    requests = apply(decision, warehouse=warehouse, instance=instance, say=say)
    return requests, state.to_json(), summary(decision)
