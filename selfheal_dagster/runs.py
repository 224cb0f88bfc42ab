"""Launch real Dagster runs of the code location from Python (the CLI, the demo, tests).

Runs execute in this process against the Dagster instance in ``DAGSTER_HOME`` (default
``.selfheal/dagster_home``, the same one ``make dev`` uses), so they show up in the UI.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import dagster as dg

from selfheal_dagster.adapters.settings import season_start
from selfheal_dagster.core import heal_records, heal_state, healing, planner
from selfheal_dagster.core.dates import (
    PARTITION_TAG,
    date_range,
    day_spans,
    now_utc,
    partition_tags,
    tag_span,
    today_et,
)
from selfheal_dagster.core.errors import error_summary
from selfheal_dagster.core.history import Outcome
from selfheal_dagster.core.names import (
    BACKFILL,
    BACKFILL_STEP,
    DAILY_JOB,
    HEAL_JOB,
    HEAL_SENSOR,
    HOST_TAG,
    SWEEP_JOB,
    SWEEP_TAG,
)
from selfheal_dagster.defs.resources import initialized
from selfheal_dagster.instance import heal_loop
from selfheal_dagster.instance.origin_runs import QUIET, execute
from selfheal_dagster.tables import BY_KEY, Table, execution_order

DEFAULT_DAGSTER_HOME = ".selfheal/dagster_home"
# The local instance `make dev` and the CLI share. Sensors tick in threads, so a slow sensor
# (the alerts sensor waiting on Slack) never delays the heal sensor.
LOCAL_INSTANCE = """telemetry:
  enabled: false
sensors:
  use_threads: true
  num_workers: 4
# A run stuck STARTING is failed by Dagster; a STARTED run whose worker died, by the
# project's run_reaper sensor (Dagster does not check workers of the default launcher).
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
"""
# Runs made here execute in this process: the run reaper judges them only on this machine.
HERE = {HOST_TAG: socket.gethostname()}
# The CLI prints its own progress and one line per failed step; a run's own console output
# (step failures come with a stack trace) stays in the instance's event log, in the UI.


def instance() -> dg.DagsterInstance:
    """The persistent instance of ``DAGSTER_HOME``, created under the project when unset.

    A home with no ``dagster.yaml`` that is new or empty (and ours) gets the project's local
    configuration, so Dagster prints no telemetry banner and no "no configuration file"
    warning; one already in use as it is stays so, said in one line of our own."""
    home = os.environ.get("DAGSTER_HOME") or str(Path(DEFAULT_DAGSTER_HOME).resolve())
    os.environ["DAGSTER_HOME"] = home
    path = Path(home)
    if not (path / "dagster.yaml").exists():
        if _unused(path):
            path.mkdir(parents=True, exist_ok=True)
            (path / "dagster.yaml").write_text(LOCAL_INSTANCE)
        else:
            _quiet_default_config_warning(home)
    path.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def _unused(path: Path) -> bool:
    if not path.exists():
        return True
    return path.is_dir() and not any(path.iterdir()) and path.stat().st_uid == os.getuid()


@cache
def _quiet_default_config_warning(home: str) -> None:
    import click

    click.echo(
        f"using the Dagster instance in {home} with Dagster's defaults (it has no dagster.yaml)",
        err=True,
    )

    class _Said(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "No dagster instance configuration file" not in record.getMessage()

    logging.getLogger("dagster").addFilter(_Said())


@cache
def definitions() -> dg.Definitions:
    from selfheal_dagster.definitions import defs  # loads the code location: only when asked

    return defs()


@dataclass(frozen=True)
class RunOutcome:
    days: tuple[date, ...]  # the run's dates, oldest first: one, or a range
    run_id: str
    success: bool
    errors: tuple[str, ...]
    phases: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        first, last = self.days[0], self.days[-1]
        return str(first) if first == last else f"{first}..{last}"


Step = tuple[tuple[date, ...], tuple[Table, ...]]  # one run: a range of dates, its tables


def materialize(
    days: Iterable[date],
    tables: Iterable[Table],
    *,
    dagster_instance: dg.DagsterInstance,
    defs: dg.Definitions | None = None,
    tags: Mapping[str, str] | None = None,
    on_done: Callable[[RunOutcome], None] | None = None,
    by_phase: bool = False,
) -> list[RunOutcome]:
    """One run per range of consecutive dates (oldest first), the chosen tables in
    dependency order: every asset computes its whole range at once.

    ``by_phase``: Phase 2 of a range in one run, then Phase 4 in another, so a date the
    source fails on stops only the Phase 4 dates that read it (the processors skip those
    dates and name the input) instead of the whole range's Phase 4.
    """
    ordered = execution_order(list(tables))
    groups = (
        [[t for t in ordered if t.phase == p] for p in sorted({t.phase for t in ordered})]
        if by_phase
        else [ordered]
    )
    steps = [
        (tuple(date_range(first, last)), tuple(g))
        for first, last in day_spans(days)
        for g in groups
        if g
    ]
    return run_steps(
        steps, dagster_instance=dagster_instance, defs=defs, tags=tags, on_done=on_done
    )


def run_steps(
    steps: Iterable[Step],
    *,
    dagster_instance: dg.DagsterInstance,
    defs: dg.Definitions | None = None,
    tags: Mapping[str, str] | None = None,
    on_done: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Each step as one run of ``daily_job``, in order; a backfill's runs say which of its
    runs they are, so the heal loop keeps its range claimed until the last."""
    job = (defs or definitions()).resolve_job_def(DAILY_JOB)
    planned = list(steps)
    outcomes = []
    for step, (span, group) in enumerate(planned, start=1):
        run_tags = {**(tags or {}), **partition_tags(span), **HERE}
        if BACKFILL in run_tags:
            run_tags[BACKFILL_STEP] = f"{step}/{len(planned)}"
        result = execute(
            job,
            dagster_instance,
            asset_selection=[dg.AssetKey(t.key_path) for t in execution_order(list(group))],
            tags=run_tags,
        )
        errors = tuple(
            f"{e.step_key}: {error_summary(e.step_failure_data.error)}"
            for e in result.get_step_failure_events()
            if e.step_failure_data.error
        )
        outcome = RunOutcome(
            days=tuple(sorted(span)),
            run_id=result.run_id,
            success=result.success,
            errors=errors,
            phases=tuple(sorted({t.phase for t in group})),
        )
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)
    return outcomes


@dataclass(frozen=True)
class BackfillPlan:
    """A backfill's runs, with the input partitions the range reads that it loads first."""

    days: tuple[date, ...]
    tables: tuple[Table, ...]
    inputs: tuple[tuple[str, date], ...]  # missing or short, outside what was asked, loadable
    too_early: tuple[tuple[str, date], ...]  # inputs before the first partition: cannot load
    steps: tuple[Step, ...]


def plan_backfill(
    days: Sequence[date],
    tables: Sequence[Table],
    defs: dg.Definitions | None = None,
    *,
    load_inputs: bool = True,
) -> BackfillPlan:
    """Plan ``tables`` over ``days``: the broken partitions the range reads through its
    partition mappings (the heal planner's root-cause rule), loaded first when asked."""
    defs = defs or definitions()
    found = initialized({name: defs.resources[name] for name in ("warehouse", "source")})
    warehouse, calendar = found["warehouse"].open(), found["source"].scheduled_games
    today = today_et()
    graph = heal_loop.planner_graph(defs.resolve_asset_graph())
    view = heal_loop.WarehouseView.read(warehouse, days, today, calendar)
    world = view.world(graph, today, (), now_utc())
    requested = {(t.key, d) for t in tables for d in days}
    broken = planner.inputs(requested, graph, max(today, *days), world.broken_inputs)
    first = season_start()
    inputs = tuple(sorted((p for p in broken if p[1] >= first), key=lambda p: (p[1], p[0])))
    too_early = tuple(sorted((p for p in broken if p[1] < first), key=lambda p: (p[1], p[0])))
    want: dict[int, dict[date, set[str]]] = {}
    for asset, day in [*requested, *(inputs if load_inputs else ())]:
        want.setdefault(BY_KEY[asset].phase, {}).setdefault(day, set()).add(asset)
    steps = [
        step
        for phase in sorted(want)
        for step in _grouped(want[phase], lambda a, d: not world.exists(a, d))
    ]
    return BackfillPlan(tuple(days), tuple(tables), inputs, too_early, tuple(steps))


def _grouped(want: Mapping[date, set[str]], empty: Callable[[str, date], bool]) -> list[Step]:
    """Runs over consecutive dates that need the same tables; a date in between where none
    of a run's tables has rows (a no-game day between two input dates) joins it rather than
    splitting it: loading it again writes nothing anyone has."""
    steps: list[tuple[list[date], set[str]]] = []
    for day in sorted(want):
        if steps and steps[-1][1] == want[day]:
            last = steps[-1][0][-1]
            gap = [last + timedelta(days=i) for i in range(1, (day - last).days)]
            if all(empty(a, d) for a in want[day] for d in gap):
                steps[-1][0].extend([*gap, day])
                continue
        steps.append(([day], set(want[day])))
    return [
        (tuple(days), tuple(execution_order([BY_KEY[a] for a in assets]))) for days, assets in steps
    ]


def request_span(request: dg.RunRequest) -> str:
    """The date, or first..last dates, a run request computes."""
    return request.partition_key or tag_span(request.tags)


@dataclass(frozen=True)
class HealRun:
    request: dg.RunRequest
    run_id: str
    outcome: str
    reason: str


class LocalLoop:
    """The daemon's work for healing, done in this process: sweep runs, heal sensor ticks, the
    requested heal runs, and their verification (the outcome sensors' function).

    The demo and tests use it to show the real sensors healing without a running daemon; under
    ``dagster dev`` the daemon does exactly this on its own.
    """

    def __init__(self, defs: dg.Definitions, dagster_instance: dg.DagsterInstance) -> None:
        self.defs = defs
        self.instance = dagster_instance
        self.sensor = defs.resolve_sensor_def(HEAL_SENSOR)
        self.resources = initialized(
            {name: defs.resources[name] for name in ("warehouse", "alerts", "source")}
        )
        self.cursor: str | None = None

    def start(self) -> None:
        """The first tick places the watermark: only failures recorded after it are healed."""
        self.tick()

    def sweep(self, **config: object) -> dict[str, object]:
        result = execute(
            self.defs.resolve_job_def(SWEEP_JOB),
            self.instance,
            run_config={"ops": {"sweep_checks": {"config": config}}, **QUIET},
            tags={SWEEP_TAG: "true", **HERE},
        )
        [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
        return {k: v.value for k, v in output.step_output_data.metadata.items()}

    def context(self, cursor: str | None = None) -> dg.SensorEvaluationContext:
        context = dg.build_sensor_context(
            instance=self.instance,
            definitions=self.defs,
            cursor=cursor if cursor is not None else self.cursor,
            resources=self.resources,
        )
        # The tick log (which the daemon keeps for the UI) would print every alert a second
        # time here; warnings still show.
        context.log.setLevel(logging.WARNING)
        return context

    def tick(self):
        data = self.sensor.evaluate_tick(self.context())
        self.cursor = data.cursor
        self.deliver()
        return data

    def deliver(self) -> None:
        """The alerts sensor's work: send what the heal history owes."""
        warehouse = self.resources["warehouse"].open()
        self.resources["alerts"].notifier(warehouse).deliver()

    def execute(self, request: dg.RunRequest, sensor: str | None = None):
        """The requested run, as the daemon would launch it (``sensor`` names the sensor
        whose tick requested it: the run is listed on that sensor's page)."""
        partition = {PARTITION_TAG: request.partition_key} if request.partition_key else {}
        by = {"dagster/sensor_name": sensor} if sensor else {}
        return execute(
            self.defs.resolve_job_def(request.job_name or HEAL_JOB),
            self.instance,
            asset_selection=list(request.asset_selection or []),
            tags={**request.tags, **partition, "dagster/run_key": request.run_key, **by, **HERE},
        )

    def verify(self, run_id: str) -> tuple[str, str]:
        run = self.instance.get_run_by_id(run_id)
        warehouse = self.resources["warehouse"].open()
        outcome, reason, _ = heal_loop.verify(self.instance, run, warehouse)
        self.deliver()
        return str(outcome), reason

    def pending(self) -> int:
        """Runs still waiting for a prerequisite, and targets whose heal has not settled."""
        state = heal_state.State.from_json(self.cursor)
        busy = [t for t in state.targets.values() if t.state == heal_state.TargetState.HEALING]
        return len(state.pending) + len(busy)

    def heal_until_quiet(
        self, max_ticks: int = 20, on_run: Callable[[HealRun], None] | None = None
    ) -> list[HealRun]:
        done = []
        for _ in range(max_ticks):
            data = self.tick()
            for request in data.run_requests:
                result = self.execute(request, sensor=self.sensor.name)
                outcome, reason = self.verify(result.run_id)
                done.append(HealRun(request, result.run_id, outcome, reason))
                if on_run:
                    on_run(done[-1])
            if not data.run_requests and not self.pending():
                break
        return done


class HealBusy(RuntimeError):
    """A heal for one of the planned targets is already queued or running."""


@dataclass
class ManualHeal:
    plan: planner.Plan
    runs: list[HealRun]
    skipped: list[str]


def heal_now(
    failing: list,
    defs: dg.Definitions,
    dagster_instance: dg.DagsterInstance,
    dry_run: bool = False,
    on_run: Callable[[HealRun], None] | None = None,
    on_plan: Callable[[object], None] | None = None,
) -> ManualHeal:
    """Plan (and unless ``dry_run`` execute, in dependency order) the heal of ``failing``
    check outcomes, as a person asked: no attempt limit, but never under a run in flight
    that writes what the plan writes."""
    now = now_utc()
    loop = LocalLoop(defs, dagster_instance)
    failures = [
        heal_state.Failure(i, o.table.key, o.day, o.check, o.reason, now)
        for i, o in enumerate(failing)
    ]
    plan = _manual_plan(loop, failures, now)
    result = ManualHeal(plan=plan, runs=[], skipped=[])
    if on_plan:
        on_plan(plan)
    if dry_run:
        return result
    busy = heal_loop.busy_partitions(dagster_instance, now)
    taken = sorted({f"{a} {d} (run {busy[(a, d)]})" for a, d in plan.writes() if (a, d) in busy})
    if taken:
        raise HealBusy("a heal is already queued or running for " + ", ".join(taken))
    cid = str(uuid.uuid4())
    launches, records = heal_records.plan_runs(
        plan, heal=failures, attempts={}, phases=heal_loop.PHASES, now=now, cid=cid, batch=cid[:8]
    )
    warehouse = loop.resources["warehouse"].open()
    warehouse.insert_histories(records)
    loop.deliver()
    _run_in_order(loop, launches, cid, result, on_run)
    if failures:  # every run of the heal ended: its incident is over
        first = failures[0]
        warehouse.insert_history(
            heal_records.closed(cid, first.asset, first.day, heal_loop.PHASES, now_utc())
        )
        loop.deliver()
    return result


def _manual_plan(loop: LocalLoop, failures: list[heal_state.Failure], now) -> planner.Plan:
    """The heal planner's plan for a person's failures, on one read of the warehouse."""
    today = today_et(now)
    warehouse = loop.resources["warehouse"].open()
    calendar = loop.resources["source"].scheduled_games
    graph = heal_loop.planner_graph(loop.defs.resolve_asset_graph())
    view = heal_loop.WarehouseView.read(warehouse, [f.day for f in failures], today, calendar)
    world = view.world(graph, today, (), now)
    return world.plan([(f.asset, f.day) for f in failures], None)


def _run_in_order(loop: LocalLoop, launches, cid: str, result: ManualHeal, on_run) -> None:
    """Execute each planned run once its prerequisites healed; a run whose prerequisite did
    not is skipped, its records resolved as the heal loop resolves a dropped run's."""
    warehouse = loop.resources["warehouse"].open()
    broken: set[str] = set()
    for launch, after in ((p.launch, p.after) for p in launches):
        if broken & set(after):
            broken.add(launch.run_key)
            phases = sorted({heal_loop.PHASES[a] for a in launch.assets})
            reason = healing.SKIPPED_REASON
            for day in launch.days:
                heal_loop.resolve(
                    warehouse, day, cid, Outcome.SKIPPED, reason, phases, now=now_utc()
                )
            loop.deliver()
            result.skipped.append(f"{request_span(heal_loop.run_request(launch))}: {reason}")
            continue
        request = heal_loop.run_request(launch)
        executed = loop.execute(request)
        outcome, reason = loop.verify(executed.run_id)
        result.runs.append(HealRun(request, executed.run_id, outcome, reason))
        if on_run:
            on_run(result.runs[-1])
        if outcome != "healed":
            broken.add(launch.run_key)
