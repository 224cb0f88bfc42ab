"""Launch real Dagster runs of the code location from Python (the CLI, the demo, tests).

Runs execute in this process against the Dagster instance in ``DAGSTER_HOME`` (default
``.selfheal/dagster_home``, the same one ``make dev`` uses), so they show up in the UI.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import dagster as dg

from selfheal_dagster.adapters.settings import season_start
from selfheal_dagster.core import heal_state, healing, planner
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
# The run queue of every deployment (deploy/dagster.yaml, deploy/helm/values.yaml): at most 8
# runs at once, one heal per target date, one sweep at a time.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 8
    tag_concurrency_limits:
      - key: "selfheal/target_date"
        value:
          applyLimitPerUniqueValue: true
        limit: 1
      - key: "selfheal/sweep"
        limit: 1
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
    """Runs that write what the heal would write, or rewrite what it reads, did not end
    within the wait."""


@dataclass
class ManualHeal:
    """A person's heal: the first decision (what ``apply`` carried out first, or would),
    the runs it waits to release, and how it went."""

    decision: heal_state.Decision
    pending: tuple[heal_state.PendingRun, ...]
    runs: list[HealRun] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)  # how each target ended
    skipped: list[str] = field(default_factory=list)  # runs not run: a prerequisite failed

    @property
    def healed(self) -> bool:
        ended = [line.split(": ", 1)[-1] for line in self.closed]
        return all(e.startswith(("healed", "superseded")) for e in ended) and not self.skipped


WAIT_SECONDS = 900.0  # how long a person's heal waits for runs in its way, by default


def heal_now(
    failing: list,
    defs: dg.Definitions,
    dagster_instance: dg.DagsterInstance,
    *,
    dry_run: bool = False,
    wait_seconds: float = WAIT_SECONDS,
    poll_seconds: float = 2.0,
    on_plan: Callable[[ManualHeal], None] | None = None,
    on_run: Callable[[HealRun], None] | None = None,
    on_wait: Callable[[list[str]], None] | None = None,
) -> ManualHeal:
    """Heal the failing check outcomes a person found, as the heal sensor would: the loop's
    ``decide`` and ``apply`` under the person's policy (``heal_state.PERSON``), its runs
    executed here and verified as the outcome sensors verify them, until its incidents close.

    It waits (up to ``wait_seconds``) for runs in flight that write what it would write or
    rewrite what it reads, as the sensor does. ``dry_run``: the first decision only."""
    loop = LocalLoop(defs, dagster_instance)
    warehouse = loop.resources["warehouse"].open()
    calendar = loop.resources["source"].scheduled_games
    graph = heal_loop.planner_graph(defs.resolve_asset_graph())
    now = now_utc()
    # Ids no check record has (they are positive), new on every heal: its correlation ID.
    first = -int(now.timestamp() * 1000) * 1000
    found: tuple[heal_state.Failure, ...] = tuple(
        heal_state.Failure(first + i, o.table.key, o.day, o.check, o.reason, now)
        for i, o in enumerate(failing)
    )
    state = heal_state.State(watermark=0)
    deadline = time.monotonic() + wait_seconds
    result: ManualHeal | None = None
    said: list[str] = []
    while True:
        now = now_utc()
        observation, world = heal_loop.gather(
            dagster_instance,
            state,
            warehouse,
            graph=graph,
            today=today_et(now),
            now=now,
            calendar=calendar,
            found=found,
        )
        found = ()
        state, decision = healing.decide(state, observation, world, now, heal_state.PERSON)
        if result is None:
            result = ManualHeal(decision, state.pending)
            if on_plan:
                on_plan(result)
            if dry_run:
                return result
        requests = heal_loop.apply(decision, warehouse=warehouse, instance=dagster_instance)
        loop.deliver()
        result.closed += decision.closed
        result.skipped += [
            f"{r.day} phase {','.join(map(str, r.phases))}: {r.reason}"
            for r in decision.resolutions
            if r.outcome is Outcome.SKIPPED
        ]
        for request in requests:
            executed = loop.execute(request)
            outcome, reason = loop.verify(executed.run_id)
            result.runs.append(HealRun(request, executed.run_id, outcome, reason))
            if on_run:
                on_run(result.runs[-1])
        if not (state.targets or state.pending or state.launched or state.incidents):
            return result
        if requests:
            continue
        if time.monotonic() > deadline:
            why = decision.skipped[0] if decision.skipped else "runs of it have not ended"
            raise HealBusy(f"still waiting after {wait_seconds:.0f} s: {why}")
        if decision.skipped != said:
            said = decision.skipped
            if on_wait:
                on_wait(said)
        time.sleep(poll_seconds)
