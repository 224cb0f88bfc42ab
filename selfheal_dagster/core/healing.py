"""The heal loop's decisions, as plain functions over plain data.

Each failing (asset, date) is a *target* the loop owns until it closes:

    open -> healing -> healed
                    -> failed -> (back-off) -> healing -> ... -> gave up (one escalation)
    open | failed -> superseded (its check passed by other means)

Attempts 2..N come from the back-off, not from new failed results: a result for a target the
loop already owns only confirms it. The targets launched together first (one tick's new
failures, and the broken inputs their plan repairs) are one *incident*: its correlation ID is
kept by every later attempt, run and history record of them, so alerts can tell one story.
``decide`` takes what the instance and the warehouse say now (``Observation``, gathered by
``instance/heal_loop.py``) and returns what to do; nothing here touches Dagster.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from itertools import product

from selfheal_dagster.core import planner
from selfheal_dagster.core.history import HealingResult, HealRecord, Outcome

CORRELATION_ID = "selfheal/correlation_id"
ATTEMPT = "selfheal/attempt"
PHASE = "selfheal/phase"
TARGET_DATE = "selfheal/target_date"
TARGET_LAST = "selfheal/target_last"  # a ranged heal run: its last date
RUN_KEY = "selfheal/run_key"
FAILED = "selfheal/failed"
DETECTED_AT = "selfheal/detected_at"
BACKFILL = "selfheal/backfill"  # "YYYY-MM-DD..YYYY-MM-DD": a manual backfill's whole range
BACKFILL_STEP = "selfheal/backfill_step"  # "k/n": this run is the k-th of the backfill's n
_NAMESPACE = uuid.UUID("5e1f4ea1-0000-4000-8000-00000000da75")
PENDING_TTL = timedelta(hours=6)
# A requested run that the daemon has not created by then was lost (a tick whose requests
# were never submitted): the attempt counts as failed.
LAUNCH_GRACE = timedelta(minutes=10)

Partition = planner.Partition


class TargetState(StrEnum):
    OPEN = "open"
    HEALING = "healing"
    FAILED = "failed"  # waiting for its back-off before the next attempt


class RunState(StrEnum):
    IN_FLIGHT = "in_flight"
    SUCCESS = "success"
    FAILURE = "failure"


def target_key(asset: str, day: date) -> str:
    return f"{asset}|{day.isoformat()}"


def short(asset: str) -> str:
    return asset.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Failure:
    """A failed, healable check result read from the instance."""

    record_id: int
    asset: str
    day: date
    check: str
    reason: str
    detected_at: datetime


@dataclass(frozen=True)
class RunStatus:
    """What the instance says of a heal run: its state, when it ended, which of its (asset,
    date) partitions it healed (written, every check it ran on them passing), and why not."""

    state: RunState
    ended_at: datetime | None = None
    healed: frozenset[Partition] = frozenset()
    reason: str = ""
    held: bool = False  # it failed only because an input was missing: nothing was computed


@dataclass(frozen=True)
class Observation:
    failures: list[Failure] = field(default_factory=list)  # new since the cursor, not stale
    # The newest new passing result per (asset, date, check).
    passes: Mapping[tuple[str, date, str], datetime] = field(default_factory=dict)
    runs: Mapping[str, RunStatus] = field(default_factory=dict)  # by run key
    busy: Mapping[Partition, str] = field(default_factory=dict)  # written by a run in flight
    sweeping: bool = False  # a sweep run is in flight: more results of its sweep may follow


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    backoff_seconds: float = 300.0  # wait before attempt 2; doubles before each later one
    # New failures wait (at most this long after detection) while a sweep run is still
    # recording results, so that what one sweep finds opens one incident.
    group_wait_seconds: float = 60.0

    def next_allowed(self, attempts: int, ended_at: datetime | None) -> datetime | None:
        if attempts == 0 or ended_at is None:
            return None
        return ended_at + timedelta(seconds=self.backoff_seconds * 2 ** (attempts - 1))


@dataclass
class Target:
    asset: str
    day: str
    check: str
    reason: str
    detected_at: float
    record_id: int
    state: str = TargetState.OPEN
    attempts: int = 0
    run_key: str | None = None  # the run of the current attempt
    cid: str | None = None  # its correlation ID
    holds: int = 0  # runs that found an input missing (no attempt spent, up to a bound)
    launched_at: float | None = None
    ended_at: float | None = None

    @property
    def partition(self) -> Partition:
        return (self.asset, date.fromisoformat(self.day))

    @property
    def key(self) -> str:
        return target_key(*self.partition)


@dataclass
class PendingRun:
    run_key: str
    day: str
    assets: list[str]
    after: list[str]  # run keys that must succeed first
    tags: dict[str, str]
    created: float
    last: str | None = None  # a ranged run's last date

    @property
    def days(self) -> list[date]:
        return _days(date.fromisoformat(self.day), self.last and date.fromisoformat(self.last))


@dataclass
class State:
    """The heal sensor's cursor."""

    watermark: int | None = None  # every check record id <= this has been handled
    seen: list[int] = field(default_factory=list)  # handled ids above the watermark
    targets: dict[str, Target] = field(default_factory=dict)
    pending: list[PendingRun] = field(default_factory=list)
    # target -> {"at": when we escalated, "check": the failing check a pass of would clear it}
    gave_up: dict[str, dict] = field(default_factory=dict)
    # Runs requested and not yet seen ended: run key -> {"writes": [[asset, day]], "at": ts,
    # "cid": its incident}.
    launched: dict[str, dict] = field(default_factory=dict)
    # Incidents not closed yet: cid -> {"asset", "day": its first target, "at": opened}.
    incidents: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> State:
        if not text:
            return cls()
        raw = json.loads(text)
        raw["pending"] = [PendingRun(**p) for p in raw.get("pending", [])]
        raw["targets"] = {k: Target(**t) for k, t in raw.get("targets", {}).items()}
        return cls(**raw)

    def run_keys(self) -> list[str]:
        """Every run key the next tick must know the status of."""
        keys = {t.run_key for t in self.targets.values() if t.run_key}
        keys |= {k for p in self.pending for k in [p.run_key, *p.after]}
        keys |= set(self.launched)
        return sorted(keys)

    def days(self) -> set[date]:
        return {date.fromisoformat(t.day) for t in self.targets.values()}


def _days(first: date, last: date | None) -> list[date]:
    return [first + timedelta(days=i) for i in range(((last or first) - first).days + 1)]


@dataclass(frozen=True)
class Launch:
    run_key: str
    day: date
    assets: tuple[str, ...]
    tags: dict[str, str]
    last: date | None = None  # a ranged run: every date from ``day`` to ``last``

    @property
    def days(self) -> list[date]:
        return _days(self.day, self.last)

    @property
    def writes(self) -> list[Partition]:
        return [(a, d) for d in self.days for a in self.assets]


@dataclass(frozen=True)
class Resolution:
    """Close the open history records of one heal run (one correlation ID, date, attempt)."""

    day: date
    correlation_id: str
    phases: tuple[int, ...]
    outcome: Outcome
    reason: str
    attempt: int | None = None


@dataclass
class Decision:
    launch: list[Launch] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    records: list[HealRecord] = field(default_factory=list)  # new "triggered" records
    escalations: list[HealRecord] = field(default_factory=list)
    # Records that close without a run: targets superseded after an attempt, incidents done.
    closing: list[HealRecord] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)  # "asset date: healed | superseded | ..."
    gave_up_runs: list[str] = field(default_factory=list)  # run keys of the last attempts


def correlation_id(record_ids: Iterable[int], salt: str = "") -> str:
    """Deterministic per batch of failures and attempt, so a re-evaluated tick gets the
    same ID and a retry a new one."""
    return str(uuid.uuid5(_NAMESPACE, ",".join(map(str, sorted(record_ids))) + salt))


def _run_key(run: planner.PlannedRun, batch: str) -> str:
    return f"selfheal-{run.key}-{batch}"


def phase_of(asset: str, phases: Mapping[str, int]) -> str:
    return f"phase{phases[asset]}"


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def decide(
    state: State,
    seen: Observation,
    graph: planner.Graph,
    exists: Callable[[str, date], bool],
    phases: Mapping[str, int],
    now: datetime,
    today: date,
    policy: Policy,
    broken_inputs: Callable[[str, date], Iterable[Partition]] | None = None,
    still_fails: Callable[[str, date, str], bool] | None = None,
) -> Decision:
    """One tick of the loop: settle what ended, take new failures, launch what is due.

    ``still_fails(asset, day, check)`` re-evaluates a target's check on the warehouse as the
    tick read it, just before an attempt is launched: a partition another run rewrote since
    the failing result was computed (a ranged refresh mid-way when the sweep read) closes as
    superseded instead of being healed twice."""
    decision = Decision()
    world = _World(
        graph, exists, phases, today, broken_inputs or _none, still_fails or _still_fails
    )
    runs = seen.runs
    for key, run in list(state.launched.items()):
        status = runs.get(key)
        never = status is None and now.timestamp() - run["at"] > LAUNCH_GRACE.total_seconds()
        if never or (status is not None and status.state is not RunState.IN_FLIGHT):
            del state.launched[key]
    _settle_pending(state, runs, now, decision)
    _settle_targets(state, seen, now, policy, world, decision)

    day_start = now - timedelta(days=1)
    state.gave_up = {k: g for k, g in state.gave_up.items() if g["at"] > day_start.timestamp()}
    for (asset, day, check), at in seen.passes.items():
        given = state.gave_up.get(target_key(asset, day))
        if given and given["check"] == check and at.timestamp() > given["at"]:
            del state.gave_up[target_key(asset, day)]  # a person (or a load) fixed it
    latest: dict[Partition, Failure] = {}
    for f in sorted(seen.failures, key=lambda f: f.record_id):
        latest[(f.asset, f.day)] = f
    for (asset, day), f in sorted(latest.items(), key=lambda kv: kv[1].record_id):
        key = target_key(asset, day)
        if key in state.targets:
            continue  # the loop owns it already: a repeated result only confirms it
        if key in state.gave_up:
            decision.skipped.append(f"{asset} {day}: gave up today; waiting for a person")
            continue
        state.targets[key] = Target(
            asset=asset,
            day=day.isoformat(),
            check=f.check,
            reason=f.reason,
            detected_at=f.detected_at.timestamp(),
            record_id=f.record_id,
        )

    _launch(state, seen, world, now, policy, decision)
    for launch in decision.launch:
        state.launched[launch.run_key] = {
            "writes": [[a, d.isoformat()] for a, d in launch.writes],
            "at": now.timestamp(),
            "cid": launch.tags.get(CORRELATION_ID),
        }
    _close_incidents(state, now, phases, decision)
    return decision


def _close_incidents(
    state: State, now: datetime, phases: Mapping[str, int], decision: Decision
) -> None:
    """An incident closes when none of its targets, waiting runs or runs in flight is left."""
    alive = {t.cid for t in state.targets.values()}
    alive |= {p.tags.get(CORRELATION_ID) for p in state.pending}
    alive |= {run.get("cid") for run in state.launched.values()}
    for cid, opened in sorted(state.incidents.items()):
        if cid not in alive:
            del state.incidents[cid]
            decision.closing.append(
                closed_record(cid, opened["asset"], date.fromisoformat(opened["day"]), phases, now)
            )


def closed_record(
    cid: str, asset: str, day: date, phases: Mapping[str, int], now: datetime
) -> HealRecord:
    """The marker that an incident is over: what it did is in its other records."""
    return HealRecord(
        phase=phase_of(asset, phases),
        target_date=day,
        missing_components=[],
        healing_result=HealingResult(triggered=False, reason="incident closed"),
        correlation_id=cid,
        timestamp=now,
        outcome=Outcome.CLOSED,
        resolved_at=now,
    )


SKIPPED_REASON = "not run: the heal it waited for did not succeed"
WAITED_REASON = "the heal it waited for failed"  # a target whose prerequisite run failed


def _settle_pending(
    state: State, runs: Mapping[str, RunStatus], now: datetime, decision: Decision
) -> None:
    """Dependents whose prerequisite runs succeeded go now; a failed prerequisite drops them,
    and a dropped one drops its own dependents in turn. A prerequisite that is neither
    pending, nor launched, nor a run counts as dropped: it will never run, so nothing may
    wait on it (a dependent of a dropped ranged run otherwise held its claims for hours)."""
    alive = {p.run_key for p in state.pending} | set(state.launched)
    expired = now.timestamp() - PENDING_TTL.total_seconds()

    def doomed(p: PendingRun) -> bool:
        statuses = [runs.get(k) for k in p.after]
        never = any(s is None and k not in alive for k, s in zip(p.after, statuses, strict=True))
        failed = any(s is not None and s.state is RunState.FAILURE for s in statuses)
        return never or failed or p.created < expired

    waiting = list(state.pending)
    while drop := [p for p in waiting if doomed(p)]:
        for p in drop:
            waiting.remove(p)
            alive.discard(p.run_key)
            decision.resolutions += [
                Resolution(
                    day=day,
                    correlation_id=p.tags[CORRELATION_ID],
                    phases=tuple(sorted({int(x) for x in p.tags[PHASE].split(",")})),
                    outcome=Outcome.SKIPPED,
                    reason=SKIPPED_REASON,
                    attempt=int(p.tags[ATTEMPT]) if ATTEMPT in p.tags else None,
                )
                for day in p.days
            ]
            for t in state.targets.values():
                if t.run_key == p.run_key:
                    t.run_key = f"dropped:{p.run_key}"
    state.pending = []
    for p in waiting:
        if all((s := runs.get(k)) is not None and s.state is RunState.SUCCESS for k in p.after):
            last = date.fromisoformat(p.last) if p.last else None
            decision.launch.append(
                Launch(p.run_key, date.fromisoformat(p.day), tuple(p.assets), p.tags, last)
            )
        else:
            state.pending.append(p)


def _settle_targets(
    state: State,
    seen: Observation,
    now: datetime,
    policy: Policy,
    world: _World,
    decision: Decision,
) -> None:
    phases = world.phases
    waiting = {p.run_key for p in state.pending}
    for key, t in list(state.targets.items()):
        if t.state == TargetState.HEALING and t.run_key:
            dropped = t.run_key.startswith("dropped:")
            status = seen.runs.get(t.run_key)
            if not dropped and (status is None or status.state is RunState.IN_FLIGHT):
                lost = (
                    status is None
                    and t.run_key not in waiting
                    and now - _ts(t.launched_at) > LAUNCH_GRACE
                )
                if not lost:
                    continue
                status = RunStatus(RunState.FAILURE, now, reason="the run was never started")
            if dropped:
                status = RunStatus(RunState.FAILURE, now, reason=WAITED_REASON)
            if t.partition in status.healed:
                del state.targets[key]
                decision.closed.append(f"{t.asset} {t.day}: healed (attempt {t.attempts})")
                continue
            t.state, t.ended_at = TargetState.FAILED, status.ended_at.timestamp()
            t.reason = status.reason or t.reason
            if status.held and t.holds < policy.max_attempts:
                # An input broke after it was planned: no attempt spent; it waits (the back-off
                # spaces the re-plans, and the plan now sees the input and holds it).
                t.holds += 1
                t.attempts -= 1
                continue
            if status.reason == "the run was never started":
                decision.resolutions.append(
                    Resolution(
                        date.fromisoformat(t.day),
                        t.cid or "",
                        (phases[t.asset],),
                        Outcome.FAILED,
                        status.reason,
                        t.attempts,
                    )
                )
            if t.attempts >= policy.max_attempts:
                del state.targets[key]
                state.gave_up[key] = {"at": now.timestamp(), "check": t.check}
                decision.escalations.append(_gave_up(t, now, world, state))
                if t.run_key:
                    decision.gave_up_runs.append(t.run_key)
                decision.closed.append(f"{t.asset} {t.day}: gave up after {t.attempts}")
                continue
        passed = seen.passes.get((*t.partition, t.check))
        if (
            t.state != TargetState.HEALING
            and passed
            and passed.timestamp() > max(t.detected_at, t.ended_at or 0)
        ):
            _supersede(state, t, f"its {t.check} check passed", now, phases, decision)


def _supersede(
    state: State,
    t: Target,
    why: str,
    now: datetime,
    phases: Mapping[str, int],
    decision: Decision,
) -> None:
    """Close a target its check says is fine now; after an attempt, its incident hears so
    (before one, there is no incident to tell: nothing is said)."""
    del state.targets[t.key]
    decision.closed.append(f"{t.asset} {t.day}: superseded ({why})")
    if t.cid and t.attempts:
        reason = f"superseded: {why}; no further attempt"
        decision.closing.append(
            _closing(t, Outcome.SUPERSEDED, HealingResult(False, reason=reason), now, phases)
        )


@dataclass(frozen=True)
class _World:
    """What planning reads, fixed for one tick."""

    graph: planner.Graph
    exists: Callable[[str, date], bool]
    phases: Mapping[str, int]
    today: date
    broken_inputs: Callable[[str, date], Iterable[Partition]]
    still_fails: Callable[[str, date, str], bool]

    def plan(self, partitions: list[Partition], repairable) -> planner.Plan:
        return planner.plan(
            partitions, self.graph, self.exists, self.today, self.broken_inputs, repairable
        )


def _launch(
    state: State,
    seen: Observation,
    world: _World,
    now: datetime,
    policy: Policy,
    decision: Decision,
) -> None:
    """Plan every target that is due; launch those whose writes no other run is making.

    Due targets of one incident are planned together; new targets together open one new
    incident. Incidents are planned one after another, each claiming what it writes, so two
    incidents never write one partition at once."""
    claimed: dict[Partition, str] = dict(seen.busy)
    for key, run in state.launched.items():
        claimed.update({(a, date.fromisoformat(d)): key for a, d in run["writes"]})
    for launch in decision.launch:  # dependents released earlier in this tick
        claimed.update({p: launch.run_key for p in launch.writes})
    for p in state.pending:
        claimed.update({(a, d): p.run_key for d in p.days for a in p.assets})
    incidents: dict[str, list[Target]] = {}  # "" for the new targets
    for t in sorted(state.targets.values(), key=lambda t: t.record_id):
        if t.state == TargetState.HEALING:
            continue
        allowed = policy.next_allowed(t.attempts, _ts(t.ended_at))
        if allowed and now < allowed:
            decision.skipped.append(
                f"{t.asset} {t.day}: backing off after attempt {t.attempts} until "
                f"{allowed:%H:%M:%S} UTC"
            )
            continue
        if not world.still_fails(*t.partition, t.check):
            why = f"its {t.check} check passes on the warehouse now"
            _supersede(state, t, why, now, world.phases, decision)
            continue
        repairable = _repairable(state, {t.key})
        held = [p for p in world.broken_inputs(*t.partition) if not repairable(p)]
        if held:
            # Its input is given up or being repaired under its own attempts: computing now
            # would fail on it. Wait for that, spending no attempt.
            decision.skipped.append(
                f"{t.asset} {t.day}: held by {', '.join(f'{a} {d}' for a, d in held)}"
            )
            continue
        fresh = now.timestamp() - t.detected_at < policy.group_wait_seconds
        if t.cid is None and seen.sweeping and fresh:
            decision.skipped.append(f"{t.asset} {t.day}: waits for the sweep in flight to finish")
            continue
        incidents.setdefault(t.cid or "", []).append(t)
    for cid, due in sorted(incidents.items(), key=lambda kv: kv[1][0].record_id):
        ready = [t for t in due if _free(t, state, world, claimed, decision)]
        if ready:  # targets ready in one tick share one plan: no claims between them
            claimed.update(_start(ready, cid or None, state, world, now, decision))


def _free(
    t: Target, state: State, world: _World, claimed: Mapping[Partition, str], decision: Decision
) -> bool:
    """Whether no run in flight or planned writes what the target's heal would write, or
    rewrites what it reads (heal once, after it)."""
    mine = world.plan([t.partition], _repairable(state, {t.key}))
    busy = sorted({claimed[p] for p in mine.writes() if p in claimed})
    if busy:
        decision.skipped.append(f"{t.asset} {t.day}: waits for queued or running {', '.join(busy)}")
        return False
    feeding = sorted({claimed[p] for p in mine.reads(world.graph) if p in claimed})
    if feeding:
        decision.skipped.append(
            f"{t.asset} {t.day}: waits for {', '.join(feeding)} rewriting its inputs"
        )
        return False
    return True


def _start(
    ready: list[Target],
    cid: str | None,
    state: State,
    world: _World,
    now: datetime,
    decision: Decision,
) -> dict[Partition, str]:
    """Plan and launch one incident's attempt (``cid`` None: a new incident); returns what
    its runs write."""
    salt = "|".join(f"{t.key}#{t.attempts + 1}" for t in ready)
    batch = correlation_id([t.record_id for t in ready], salt)  # unique per attempt
    if cid is None:
        cid = batch
        state.incidents[cid] = {"asset": ready[0].asset, "day": ready[0].day, "at": now.timestamp()}
    plan = world.plan([t.partition for t in ready], _repairable(state, {t.key for t in ready}))
    failures = [
        Failure(
            t.record_id, t.asset, date.fromisoformat(t.day), t.check, t.reason, _ts(t.detected_at)
        )
        for t in ready
    ]
    attempts = {t.partition: t.attempts for t in ready}
    launches, records = plan_runs(plan, failures, attempts, world.phases, now, cid, batch[:8])
    decision.records += records
    run_of = {}
    for launch, after in launches:
        run_of.update({p: launch.run_key for p in launch.writes})
        if after:
            state.pending.append(
                PendingRun(
                    run_key=launch.run_key,
                    day=launch.day.isoformat(),
                    assets=list(launch.assets),
                    after=after,
                    tags=launch.tags,
                    created=now.timestamp(),
                    last=launch.last.isoformat() if launch.last else None,
                )
            )
        else:
            decision.launch.append(launch)
    # A broken input repaired first becomes a target of its own: the loop owns its attempts,
    # so an outage found as a root cause is tried max_attempts times in all, not more.
    for run in plan.runs:
        for asset in run.failed:
            key = target_key(asset, run.day)
            if key not in state.targets:
                state.targets[key] = Target(
                    asset=asset,
                    day=run.day.isoformat(),
                    check="row_count",
                    reason="read by a failed target, missing or short",
                    detected_at=now.timestamp(),
                    record_id=min(t.record_id for t in ready),
                )
                ready.append(state.targets[key])
    for t in ready:
        t.state, t.attempts = TargetState.HEALING, t.attempts + 1
        t.run_key, t.launched_at, t.ended_at = run_of[t.partition], now.timestamp(), None
        t.cid = cid
    return run_of


def _none(asset: str, day: date) -> tuple[Partition, ...]:
    return ()


def _still_fails(asset: str, day: date, check: str) -> bool:
    return True


def _repairable(state: State, planning: set[str]) -> Callable[[Partition], bool]:
    """A broken input may join a plan unless it was given up, or another target owns it
    (its repair follows that target's back-off and attempts)."""

    def repairable(partition: Partition) -> bool:
        key = target_key(*partition)
        return key not in state.gave_up and (key not in state.targets or key in planning)

    return repairable


def held_by(partition: Partition, world: _World, state: State) -> list[Partition]:
    """What stays broken while ``partition`` is: the existing partitions that read it
    (directly or through others), which no refresh may recompute, and the targets it holds."""
    downstream = world.plan([partition], lambda p: False).writes() - {partition}
    waiting = {
        t.partition
        for t in state.targets.values()
        if t.partition != partition and partition in set(world.broken_inputs(*t.partition))
    }
    return sorted(downstream | waiting, key=lambda p: (p[1], p[0]))


def spans(partitions: Iterable[Partition], order: Sequence[str] = ()) -> list[list[str]]:
    """``[[asset, first, last], ...]``: each asset's dates as runs of consecutive days."""
    by_asset: dict[str, list[date]] = {}
    for asset, day in partitions:
        by_asset.setdefault(asset, []).append(day)
    rank = {a: i for i, a in enumerate(order)}
    out = []
    for asset in sorted(by_asset, key=lambda a: (rank.get(a, len(rank)), a)):
        days = sorted(set(by_asset[asset]))
        first = prev = days[0]
        for day in days[1:] + [None]:
            if day is not None and (day - prev).days == 1:
                prev = day
                continue
            out.append([asset, first.isoformat(), prev.isoformat()])
            if day is not None:
                first = prev = day
    return out


def _gave_up(t: Target, now: datetime, world: _World, state: State) -> HealRecord:
    reason = f"gave up after {t.attempts} attempts: {t.reason}; needs a person"
    closing = _closing(
        t, Outcome.GAVE_UP, HealingResult(False, failed=True, reason=reason), now, world.phases
    )
    held = spans(held_by(t.partition, world, state), world.graph.order)
    cid = t.cid or correlation_id([t.record_id], f"gave-up|{t.key}|{t.attempts}")
    return replace(closing, correlation_id=cid, held=held)


def _closing(
    t: Target,
    outcome: Outcome,
    result: HealingResult,
    now: datetime,
    phases: Mapping[str, int],
) -> HealRecord:
    """The record that closes a target without a run of its own (gave up, superseded)."""
    return HealRecord(
        phase=phase_of(t.asset, phases),
        target_date=date.fromisoformat(t.day),
        missing_components=[short(t.asset)],
        healing_result=result,
        correlation_id=t.cid or "",
        timestamp=now,
        success=outcome is not Outcome.GAVE_UP,
        outcome=outcome,
        attempt=t.attempts,
        assets=[t.asset],
        detected_at=_ts(t.detected_at),
        resolved_at=now,
    )


def plan_runs(
    plan: planner.Plan,
    heal: list[Failure],
    attempts: Mapping[Partition, int],
    phases: Mapping[str, int],
    now: datetime,
    cid: str,
    batch: str,
) -> tuple[list[tuple[Launch, list[str]]], list[HealRecord]]:
    """Run keys, tags and "triggered" history records for a plan.

    Returns each run with the run keys it must wait for, and one history record per (date,
    phase) of the plan (a ranged run: one per date it covers). ``attempts`` are the attempts
    made so far per failed target; ``batch`` makes the run keys unique per batch and attempt.
    """
    keys = {r.key: _run_key(r, batch) for r in plan.runs}
    by_target = {(f.asset, f.day): f for f in heal}
    launches, records = [], []
    for run in plan.runs:
        mine = [by_target[(a, run.day)] for a in run.failed if (a, run.day) in by_target]
        # The attempt at the failures that caused this run (a refresh-only run: its roots').
        attempt = 1 + max(attempts.get((f.asset, f.day), 0) for f in mine or heal)
        run_phases = sorted({phases[a] for a in run.assets})
        detected = min((f.detected_at for f in mine), default=min(f.detected_at for f in heal))
        tags = {
            CORRELATION_ID: cid,
            ATTEMPT: str(attempt),
            PHASE: ",".join(map(str, run_phases)),
            TARGET_DATE: run.day.isoformat(),
            RUN_KEY: keys[run.key],
            FAILED: ",".join(short(a) for a in run.failed),
            DETECTED_AT: detected.isoformat(),
        }
        if run.last:
            tags[TARGET_LAST] = run.last.isoformat()
        launches.append(
            (
                Launch(keys[run.key], run.day, run.assets, tags, run.last),
                [keys[k] for k in run.after],
            )
        )
        upstream = ", ".join(f"{short(f.asset)} {f.day}" for f in heal if f.day < run.day)
        for day, phase in product(run.days, run_phases):
            reasons = "; ".join(
                f"{short(f.asset)} {f.check}: {f.reason}" for f in mine if phases[f.asset] == phase
            )
            broken = [a for a in run.failed if phases[a] == phase and (a, run.day) not in by_target]
            cause = reasons or (
                f"root cause first: {', '.join(map(short, broken))} read by the heal"
                if broken
                else ""
            )
            records.append(
                HealRecord(
                    phase=f"phase{phase}",
                    target_date=day,
                    missing_components=[short(a) for a in run.failed if phases[a] == phase],
                    healing_result=HealingResult(
                        triggered=True, reason=cause or f"refresh: reads the healed {upstream}"
                    ),
                    cause=cause,
                    correlation_id=cid,
                    timestamp=now,
                    attempt=attempt,
                    assets=[a for a in run.assets if phases[a] == phase],
                    detected_at=detected,
                )
            )
    merged: dict[str, HealRecord] = {}
    for r in records:  # two runs of one date and phase (one waits, one not): one record
        if r.id in merged:
            m = merged[r.id]
            r = replace(
                m,
                missing_components=[*m.missing_components, *r.missing_components],
                assets=[*m.assets, *r.assets],
            )
        merged[r.id] = r
    return launches, list(merged.values())
