"""The heal loop's decisions: one pure function, ``decide``, over frozen values.

Each failing (asset, date) is a *target* the loop owns until it closes:

    open -> healing -> healed
                    -> failed -> (back-off) -> healing -> ... -> gave up (one escalation)
    open | failed -> superseded (its check passed by other means)

Attempts 2..N come from the back-off, not from new failed results: a result for a target the
loop already owns only confirms it. The targets launched together first (one tick's new
failures, and the broken inputs their plan repairs) are one *incident*: its correlation ID is
kept by every later attempt, run and history record of them, so alerts can tell one story.

``decide(state, observation, world, now, policy)`` returns the next state and a ``Decision``;
the values it is given are frozen (``core/heal_state.py``), so it cannot change them. Its
work happens on a ``_Tick``: fresh containers filled from the state, read back into a new
state at the end. ``instance/heal_loop.py`` gathers the observation and applies the decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from selfheal_dagster.core.heal_records import (
    closed,
    correlation_id,
    fixed,
    gave_up,
    plan_runs,
    superseded,
)
from selfheal_dagster.core.heal_state import (
    Decision,
    Failure,
    GaveUp,
    Launch,
    Launched,
    Observation,
    OpenIncident,
    Partition,
    PendingRun,
    Policy,
    Resolution,
    RunState,
    RunStatus,
    State,
    Target,
    TargetState,
    World,
    target_key,
)
from selfheal_dagster.core.history import HEALED_BY, Outcome
from selfheal_dagster.core.names import (
    ATTEMPT,
    CORRELATION_ID,
    PHASE,
)

PENDING_TTL = timedelta(hours=6)
# A requested run that the daemon has not created by then was lost (a tick whose requests
# were never submitted): the attempt counts as failed.
LAUNCH_GRACE = timedelta(minutes=10)
SKIPPED_REASON = "not run: the heal it waited for did not succeed"
WAITED_REASON = "the heal it waited for failed"  # a target whose prerequisite run failed
NEVER_STARTED = "the run was never started"
DROPPED = "dropped:"  # a target's run key once the run it waited for was dropped


@dataclass
class _Tick:
    """One decision's scratch: fresh containers filled from the state it was given."""

    targets: dict[str, Target]
    pending: list[PendingRun]
    gave_up: dict[str, GaveUp]
    launched: dict[str, Launched]
    incidents: dict[str, OpenIncident]
    decision: Decision = field(default_factory=Decision)

    @classmethod
    def of(cls, state: State) -> _Tick:
        return cls(
            dict(state.targets),
            list(state.pending),
            dict(state.gave_up),
            dict(state.launched),
            dict(state.incidents),
        )

    def state(self, before: State) -> State:
        return replace(
            before,
            targets=self.targets,
            pending=tuple(self.pending),
            gave_up=self.gave_up,
            launched=self.launched,
            incidents=self.incidents,
        )

    def skip(self, line: str) -> None:
        self.decision.skipped.append(line)


def decide(
    state: State, observation: Observation, world: World, now: datetime, policy: Policy
) -> tuple[State, Decision]:
    """One tick of the loop: settle what ended, take new failures, launch what is due.

    ``world.still_fails(asset, day, check)`` re-evaluates a target's check on the warehouse as
    the tick read it, just before an attempt is launched: a partition another run rewrote
    since the failing result was computed (a ranged refresh mid-way when the sweep read)
    closes as superseded instead of being healed twice."""
    if observation.watermark is not None:  # the check records read are handled
        state = replace(state, watermark=observation.watermark, seen=observation.seen)
    tick = _Tick.of(state)
    for key, run in list(tick.launched.items()):
        status = observation.runs.get(key)
        never = status is None and now - run.at > LAUNCH_GRACE
        if never or (status is not None and status.state is not RunState.IN_FLIGHT):
            del tick.launched[key]
    _settle_pending(tick, observation.runs, now)
    _settle_targets(tick, observation, now=now, policy=policy, world=world)
    _forget_given_up(tick, observation.passes, now)
    _take_failures(tick, observation.failures)
    _launch(tick, observation, world=world, now=now, policy=policy)
    for launch in tick.decision.launch:
        cid = launch.tags.get(CORRELATION_ID)
        tick.launched[launch.run_key] = Launched(tuple(launch.writes), now, cid)
    _close_incidents(tick, now, world.phases)
    return tick.state(state), tick.decision


def _forget_given_up(
    tick: _Tick, passes: Mapping[tuple[str, date, str], datetime], now: datetime
) -> None:
    """A give-up lasts a day, or until its check passes (a person, or a load, fixed it)."""
    tick.gave_up = {k: g for k, g in tick.gave_up.items() if g.at > now - timedelta(days=1)}
    for (asset, day, check), at in passes.items():
        given = tick.gave_up.get(target_key(asset, day))
        if given and given.check == check and at > given.at:
            del tick.gave_up[target_key(asset, day)]


def _take_failures(tick: _Tick, failures: tuple[Failure, ...]) -> None:
    """The newest failure per partition opens a target, unless the loop owns it already (a
    repeated result only confirms it) or gave up on it today."""
    latest: dict[Partition, Failure] = {}
    for f in sorted(failures, key=lambda f: f.record_id):
        latest[(f.asset, f.day)] = f
    for (asset, day), f in sorted(latest.items(), key=lambda kv: kv[1].record_id):
        key = target_key(asset, day)
        if key in tick.targets:
            continue
        if key in tick.gave_up:
            tick.skip(f"{asset} {day}: gave up today; waiting for a person")
            continue
        tick.targets[key] = Target(
            asset=asset,
            day=day,
            check=f.check,
            reason=f.reason,
            detected_at=f.detected_at,
            record_id=f.record_id,
        )


def _close_incidents(tick: _Tick, now: datetime, phases: Mapping[str, int]) -> None:
    """An incident closes when none of its targets, waiting runs or runs in flight is left."""
    alive = {t.cid for t in tick.targets.values()}
    alive |= {p.tags.get(CORRELATION_ID) for p in tick.pending}
    alive |= {run.cid for run in tick.launched.values()}
    for cid, opened in sorted(tick.incidents.items()):
        if cid not in alive:
            del tick.incidents[cid]
            tick.decision.closing.append(closed(cid, opened.asset, opened.day, phases, now))


def _settle_pending(tick: _Tick, runs: Mapping[str, RunStatus], now: datetime) -> None:
    """Dependents whose prerequisite runs succeeded go now; a failed prerequisite drops them,
    and a dropped one drops its own dependents in turn. A prerequisite that is neither
    pending, nor launched, nor a run counts as dropped: it will never run, so nothing may
    wait on it (a dependent of a dropped ranged run otherwise held its claims for hours)."""
    alive = {p.run_key for p in tick.pending} | set(tick.launched)
    expired = now - PENDING_TTL

    def doomed(p: PendingRun) -> bool:
        statuses = [runs.get(k) for k in p.after]
        never = any(s is None and k not in alive for k, s in zip(p.after, statuses, strict=True))
        failed = any(s is not None and s.state is RunState.FAILURE for s in statuses)
        return never or failed or p.created < expired

    waiting = list(tick.pending)
    while drop := [p for p in waiting if doomed(p)]:
        for p in drop:
            waiting.remove(p)
            alive.discard(p.run_key)
            tick.decision.resolutions.extend(_skipped(p, day, now) for day in p.days)
            for key, t in list(tick.targets.items()):
                if t.run_key == p.run_key:
                    tick.targets[key] = replace(t, run_key=f"{DROPPED}{p.run_key}")
    tick.pending = []
    for p in waiting:
        if all((s := runs.get(k)) is not None and s.state is RunState.SUCCESS for k in p.after):
            tick.decision.launch.append(Launch(p.run_key, p.day, p.assets, p.tags, p.last))
        else:
            tick.pending.append(p)


def _skipped(p: PendingRun, day: date, now: datetime) -> Resolution:
    return Resolution(
        day=day,
        correlation_id=p.tags[CORRELATION_ID],
        phases=tuple(sorted({int(x) for x in p.tags[PHASE].split(",")})),
        outcome=Outcome.SKIPPED,
        reason=SKIPPED_REASON,
        attempt=int(p.tags[ATTEMPT]) if ATTEMPT in p.tags else None,
        at=now,
    )


def _settled(t: Target, tick: _Tick, seen: Observation, now: datetime) -> RunStatus | None:
    """How a healing target's run ended (lost, or its prerequisite dropped: failed); None
    while it runs or waits."""
    dropped = t.run_key.startswith(DROPPED)
    if dropped:
        return RunStatus(RunState.FAILURE, now, reason=WAITED_REASON)
    status = seen.runs.get(t.run_key)
    if status is not None and status.state is not RunState.IN_FLIGHT:
        return status
    waiting = {p.run_key for p in tick.pending}
    lost = status is None and t.run_key not in waiting and now - t.launched_at > LAUNCH_GRACE
    return RunStatus(RunState.FAILURE, now, reason=NEVER_STARTED) if lost else None


def _settle_targets(
    tick: _Tick, seen: Observation, *, now: datetime, policy: Policy, world: World
) -> None:
    """Close what healed; count a failed attempt (or a hold, which spends none); give up at
    the cap; supersede what a newer result says passes."""
    for key, t in list(tick.targets.items()):
        if t.state == TargetState.HEALING and t.run_key:
            status = _settled(t, tick, seen, now)
            if status is None:
                continue
            if t.partition in status.healed:
                del tick.targets[key]
                tick.decision.closed.append(f"{t.asset} {t.day}: healed (attempt {t.attempts})")
                if paged := seen.paged.get(t.partition):  # its page is answered
                    tick.decision.closing.append(fixed(paged, t, status.run_id, now, world.phases))
                continue
            t = replace(
                t,
                state=TargetState.FAILED,
                ended_at=status.ended_at,
                reason=status.reason or t.reason,
            )
            if status.held and t.holds < policy.max_attempts:
                # An input broke after it was planned: no attempt spent; it waits (the back-off
                # spaces the re-plans, and the plan now sees the input and holds it).
                tick.targets[key] = replace(t, holds=t.holds + 1, attempts=t.attempts - 1)
                continue
            tick.targets[key] = t
            if status.reason == NEVER_STARTED:
                tick.decision.resolutions.append(
                    Resolution(
                        t.day,
                        t.cid or "",
                        (world.phases[t.asset],),
                        Outcome.FAILED,
                        NEVER_STARTED,
                        t.attempts,
                        at=now,
                    )
                )
            if t.attempts >= policy.max_attempts:
                _give_up(tick, t, now, world)
                continue
        passed = seen.passes.get((*t.partition, t.check))
        last_word = max(d for d in (t.detected_at, t.ended_at) if d is not None)
        if t.state != TargetState.HEALING and passed and passed > last_word:
            by = seen.passed_by.get((*t.partition, t.check))
            why = f"{HEALED_BY} {by[:8]}'s runs" if by and by != t.cid else None
            _supersede(tick, t, why or f"its {t.check} check passed", now, world.phases)


def _give_up(tick: _Tick, t: Target, now: datetime, world: World) -> None:
    del tick.targets[t.key]
    tick.gave_up[t.key] = GaveUp(now, t.check)
    tick.decision.escalations.append(gave_up(t, now, world, tick.targets))
    if t.run_key:
        tick.decision.gave_up_runs.append(t.run_key)
    tick.decision.closed.append(f"{t.asset} {t.day}: gave up after {t.attempts}")


def _supersede(tick: _Tick, t: Target, why: str, now: datetime, phases: Mapping[str, int]) -> None:
    """Close a target its check says is fine now; once it has run or waited for an input,
    its incident hears so (before that, there is no incident to tell: nothing is said)."""
    del tick.targets[t.key]
    tick.decision.closed.append(f"{t.asset} {t.day}: superseded ({why})")
    if t.cid and (t.attempts or t.holds):
        tick.decision.closing.append(superseded(t, why, now, phases))


def _claims(tick: _Tick, seen: Observation) -> dict[Partition, str]:
    """What runs in flight, launched, released this tick or waiting will write."""
    claimed: dict[Partition, str] = dict(seen.busy)
    for key, run in tick.launched.items():
        claimed.update({p: key for p in run.writes})
    for launch in tick.decision.launch:  # dependents released earlier in this tick
        claimed.update({p: launch.run_key for p in launch.writes})
    for p in tick.pending:
        claimed.update({(a, d): p.run_key for d in p.days for a in p.assets})
    return claimed


def _timely(
    t: Target, tick: _Tick, seen: Observation, *, world: World, now: datetime, policy: Policy
) -> bool:
    """Whether a target not healing may be planned now as far as time goes: its back-off is
    over, its check still fails, no sweep in flight may still add to what it opens (else
    the tick says why not)."""
    allowed = policy.next_allowed(t.attempts, t.ended_at)
    if allowed and now < allowed:
        tick.skip(
            f"{t.asset} {t.day}: backing off after attempt {t.attempts} until "
            f"{allowed:%H:%M:%S} UTC"
        )
        return False
    if not world.still_fails(*t.partition, t.check):
        why = f"its {t.check} check passes on the warehouse now"
        _supersede(tick, t, why, now, world.phases)
        return False
    fresh = (now - t.detected_at).total_seconds() < policy.group_wait_seconds
    if t.cid is None and seen.sweeping and fresh:
        tick.skip(f"{t.asset} {t.day}: waits for the sweep in flight to finish")
        return False
    return True


def _held(t: Target, tick: _Tick, world: World, planning: set[str]) -> bool:
    """Whether a broken input the target reads is given up, or owned by a target outside
    ``planning`` (repaired under its own attempts): computing now would fail on it, so it
    waits, spending no attempt."""
    repairable = _repairable(tick, planning)
    held = [p for p in world.broken_inputs(*t.partition) if not repairable(p)]
    if held:
        tick.skip(f"{t.asset} {t.day}: held by {', '.join(f'{a} {d}' for a, d in held)}")
    return bool(held)


def connected(
    targets: list[Target], world: World, planning: set[str], tick: _Tick
) -> list[list[Target]]:
    """The targets in groups that touch: two are one group when their plans write a common
    partition (one reads the other, directly or through what it refreshes, or both are read
    by one refresh: planned apart, that refresh would run twice). Groups keep the targets'
    order, and come in the order of their first target."""
    repairable = _repairable(tick, planning)
    writes = {t.key: world.plan([t.partition], repairable).writes() for t in targets}
    root = {t.key: t.key for t in targets}

    def find(key: str) -> str:
        while root[key] != key:
            root[key] = root[root[key]]
            key = root[key]
        return key

    for i, a in enumerate(targets):
        for b in targets[i + 1 :]:
            if writes[a.key] & writes[b.key]:
                root[find(b.key)] = find(a.key)
    groups: dict[str, list[Target]] = {}
    for t in targets:
        groups.setdefault(find(t.key), []).append(t)
    return list(groups.values())


def _launch(tick: _Tick, seen: Observation, *, world: World, now: datetime, policy: Policy) -> None:
    """Plan every target that is due; launch those whose writes no other run is making.

    An incident's due targets are planned together. New targets that touch (their plans
    write a common partition: a root cause and its readers) open one incident with one
    plan; new targets that do not touch open one each. Incidents are planned one after another, each
    claiming what it writes, so two incidents never write one partition at once."""
    claimed = _claims(tick, seen)
    timely: dict[str, list[Target]] = {}  # by incident; "" for the new targets
    for t in sorted(tick.targets.values(), key=lambda t: t.record_id):
        if t.state != TargetState.HEALING and _timely(
            t, tick, seen, world=world, now=now, policy=policy
        ):
            timely.setdefault(t.cid or "", []).append(t)
    groups: list[tuple[str, list[Target], set[str]]] = []
    for cid, group in timely.items():
        planning = {t.key for t in group}
        due = [t for t in group if not _held(t, tick, world, planning)]
        planning = {t.key for t in due}
        if cid:
            groups.append((cid, due, planning))
        else:
            groups += [("", c, planning) for c in connected(due, world, planning, tick)]
    for cid, due, planning in sorted(groups, key=lambda g: g[1][0].record_id if g[1] else 0):
        ready = [t for t in due if _free(t, tick, world, claimed, planning)]
        if ready:  # targets ready in one tick share one plan: no claims between them
            claimed.update(_start(ready, cid or None, tick, world, now))


def _free(
    t: Target,
    tick: _Tick,
    world: World,
    claimed: Mapping[Partition, str],
    planning: set[str],
) -> bool:
    """Whether no run in flight or planned writes what the target's heal would write, or
    rewrites what it reads (heal once, after it)."""
    mine = world.plan([t.partition], _repairable(tick, planning))
    busy = sorted({claimed[p] for p in mine.writes() if p in claimed})
    if busy:
        tick.skip(f"{t.asset} {t.day}: waits for queued or running {', '.join(busy)}")
        return False
    feeding = sorted({claimed[p] for p in mine.reads(world.graph) if p in claimed})
    if feeding:
        tick.skip(f"{t.asset} {t.day}: waits for {', '.join(feeding)} rewriting its inputs")
        return False
    return True


def _start(
    ready: list[Target], cid: str | None, tick: _Tick, world: World, now: datetime
) -> dict[Partition, str]:
    """Plan and launch one incident's attempt (``cid`` None: a new incident); returns what
    its runs write."""
    # A launch again after a run that waited for an input: a new batch (run keys are unique).
    salt = "|".join(f"{t.key}#{t.attempts + 1}" + (f"w{t.holds}" if t.holds else "") for t in ready)
    batch = correlation_id([t.record_id for t in ready], salt)  # unique per attempt
    if cid is None:
        cid = batch
        tick.incidents[cid] = OpenIncident(ready[0].asset, ready[0].day, now)
    plan = world.plan([t.partition for t in ready], _repairable(tick, {t.key for t in ready}))
    failures = [
        Failure(t.record_id, t.asset, t.day, t.check, t.reason, t.detected_at) for t in ready
    ]
    planned, records = plan_runs(
        plan,
        heal=failures,
        attempts={t.partition: t.attempts for t in ready},
        holds={t.partition: t.holds for t in ready},
        phases=world.phases,
        now=now,
        cid=cid,
        batch=batch[:8],
    )
    tick.decision.records.extend(records)
    run_of = {}
    for p in planned:
        launch = p.launch
        run_of.update({w: launch.run_key for w in launch.writes})
        if p.after:
            tick.pending.append(
                PendingRun(
                    launch.run_key,
                    launch.day,
                    launch.assets,
                    p.after,
                    launch.tags,
                    now,
                    launch.last,
                )
            )
        else:
            tick.decision.launch.append(launch)
    owned = [*ready, *_inputs_owned(plan, tick, min(t.record_id for t in ready), now)]
    for t in owned:
        tick.targets[t.key] = replace(
            t,
            state=TargetState.HEALING,
            attempts=t.attempts + 1,
            run_key=run_of[t.partition],
            launched_at=now,
            ended_at=None,
            cid=cid,
        )
    return run_of


def _inputs_owned(plan, tick: _Tick, record_id: int, now: datetime) -> list[Target]:
    """A broken input repaired first becomes a target of its own: the loop owns its attempts,
    so an outage found as a root cause is tried max_attempts times in all, not more."""
    found = []
    for run in plan.runs:
        for asset in run.failed:
            key = target_key(asset, run.day)
            if key not in tick.targets:
                tick.targets[key] = Target(
                    asset=asset,
                    day=run.day,
                    check="row_count",
                    reason="read by a failed target, missing or short",
                    detected_at=now,
                    record_id=record_id,
                )
                found.append(tick.targets[key])
    return found


def _repairable(tick: _Tick, planning: set[str]) -> Callable[[Partition], bool]:
    """A broken input may join a plan unless it was given up, or another target owns it
    (its repair follows that target's back-off and attempts)."""

    def repairable(partition: Partition) -> bool:
        key = target_key(*partition)
        return key not in tick.gave_up and (key not in tick.targets or key in planning)

    return repairable
