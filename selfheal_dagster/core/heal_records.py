"""What a heal says of itself: its run keys and tags, and its heal-history records (one per
date and phase of a plan, those that close a target without a run, an incident's end)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from itertools import product

from selfheal_dagster.core import planner
from selfheal_dagster.core.dates import day_spans
from selfheal_dagster.core.heal_state import (
    Failure,
    Launch,
    Partition,
    Target,
    World,
)
from selfheal_dagster.core.history import HealingResult, HealRecord, Outcome
from selfheal_dagster.core.names import (
    ATTEMPT,
    CORRELATION_ID,
    DETECTED_AT,
    FAILED,
    PHASE,
    RUN_KEY,
    TARGET_DATE,
    TARGET_LAST,
)
from selfheal_dagster.tables import table_name

_NAMESPACE = uuid.UUID("5e1f4ea1-0000-4000-8000-00000000da75")


def correlation_id(record_ids: Iterable[int], salt: str = "") -> str:
    """Deterministic per batch of failures and attempt, so a re-evaluated tick gets the
    same ID and a retry a new one."""
    return str(uuid.uuid5(_NAMESPACE, ",".join(map(str, sorted(record_ids))) + salt))


def phase_of(asset: str, phases: Mapping[str, int]) -> str:
    return f"phase{phases[asset]}"


@dataclass(frozen=True)
class PlannedLaunch:
    """A run of a plan: its launch, and the run keys it must wait for."""

    launch: Launch
    after: tuple[str, ...]


def plan_runs(
    plan: planner.Plan,
    *,
    heal: Sequence[Failure],
    attempts: Mapping[Partition, int],
    phases: Mapping[str, int],
    now: datetime,
    cid: str,
    batch: str,
    holds: Mapping[Partition, int] | None = None,
) -> tuple[list[PlannedLaunch], list[HealRecord]]:
    """Run keys, tags and "triggered" history records for a plan.

    One history record per (date, phase) of the plan (a ranged run: one per date it covers).
    ``attempts`` are the attempts made so far per failed target; ``batch`` makes the run keys
    unique per batch and attempt.
    """
    keys = {r.key: f"selfheal-{r.key}-{batch}" for r in plan.runs}
    by_target = {(f.asset, f.day): f for f in heal}
    launches, records = [], []
    for run in plan.runs:
        mine = [by_target[(a, run.day)] for a in run.failed if (a, run.day) in by_target]
        # The attempt at the failures that caused this run (a refresh-only run: its roots').
        attempt = 1 + max(attempts.get((f.asset, f.day), 0) for f in mine or heal)
        waited = max((holds or {}).get((f.asset, f.day), 0) for f in mine or heal)
        detected = min((f.detected_at for f in mine), default=min(f.detected_at for f in heal))
        tags = _tags(
            run, cid=cid, attempt=attempt, key=keys[run.key], detected=detected, phases=phases
        )
        launch = Launch(keys[run.key], run.day, run.assets, tags, run.last)
        launches.append(PlannedLaunch(launch, tuple(keys[k] for k in run.after)))
        records += _records(
            run,
            mine=mine,
            heal=heal,
            phases=phases,
            now=now,
            cid=cid,
            attempt=attempt,
            detected=detected,
            waited=waited,
        )
    return launches, _merged(records)


def _tags(
    run: planner.PlannedRun,
    *,
    cid: str,
    attempt: int,
    key: str,
    detected: datetime,
    phases: Mapping[str, int],
) -> dict[str, str]:
    tags = {
        CORRELATION_ID: cid,
        ATTEMPT: str(attempt),
        PHASE: ",".join(map(str, sorted({phases[a] for a in run.assets}))),
        TARGET_DATE: run.day.isoformat(),
        RUN_KEY: key,
        FAILED: ",".join(table_name(a) for a in run.failed),
        DETECTED_AT: detected.isoformat(),
    }
    if run.last:
        tags[TARGET_LAST] = run.last.isoformat()
    return tags


def _records(
    run: planner.PlannedRun,
    *,
    mine: Sequence[Failure],
    heal: Sequence[Failure],
    phases: Mapping[str, int],
    now: datetime,
    cid: str,
    attempt: int,
    detected: datetime,
    waited: int = 0,
) -> list[HealRecord]:
    """One "triggered" record per date and phase a run covers, saying why it runs."""
    targets = {(f.asset, f.day) for f in heal}
    upstream = ", ".join(f"{table_name(f.asset)} {f.day}" for f in heal if f.day < run.day)
    out = []
    for day, phase in product(run.days, sorted({phases[a] for a in run.assets})):
        reasons = "; ".join(
            f"{table_name(f.asset)} {f.check}: {f.reason}" for f in mine if phases[f.asset] == phase
        )
        broken = [a for a in run.failed if phases[a] == phase and (a, run.day) not in targets]
        cause = reasons or (
            f"root cause first: {', '.join(map(table_name, broken))} read by the heal"
            if broken
            else ""
        )
        out.append(
            HealRecord(
                phase=f"phase{phase}",
                target_date=day,
                missing_components=[table_name(a) for a in run.failed if phases[a] == phase],
                healing_result=HealingResult(
                    triggered=True, reason=cause or f"refresh: reads the healed {upstream}"
                ),
                cause=cause,
                correlation_id=cid,
                timestamp=now,
                attempt=attempt,
                assets=[a for a in run.assets if phases[a] == phase],
                detected_at=detected,
                waited=waited,
            )
        )
    return out


def _merged(records: list[HealRecord]) -> list[HealRecord]:
    """Two runs of one date and phase (one waits, one not): one record."""
    merged: dict[str, HealRecord] = {}
    for r in records:
        if r.id in merged:
            m = merged[r.id]
            r = replace(
                m,
                missing_components=[*m.missing_components, *r.missing_components],
                assets=[*m.assets, *r.assets],
            )
        merged[r.id] = r
    return list(merged.values())


def closing(
    t: Target, outcome: Outcome, result: HealingResult, now: datetime, phases: Mapping[str, int]
) -> HealRecord:
    """The record that closes a target without a run of its own (gave up, superseded)."""
    return HealRecord(
        phase=phase_of(t.asset, phases),
        target_date=t.day,
        missing_components=[table_name(t.asset)],
        healing_result=result,
        correlation_id=t.cid or "",
        timestamp=now,
        success=outcome is not Outcome.GAVE_UP,
        outcome=outcome,
        attempt=t.attempts,
        assets=[t.asset],
        detected_at=t.detected_at,
        resolved_at=now,
    )


def superseded(t: Target, why: str, now: datetime, phases: Mapping[str, int]) -> HealRecord:
    reason = f"superseded: {why}; no further attempt"
    return closing(t, Outcome.SUPERSEDED, HealingResult(False, reason=reason), now, phases)


def fixed(
    paged: str, t: Target, run_id: str, now: datetime, phases: Mapping[str, int]
) -> HealRecord:
    """The record that answers a page: the target it gave up on is healed, by which
    incident's run. It belongs to the incident that paged."""
    reason = f"fixed: healed by incident {(t.cid or '')[:8]}" + (
        f", run {run_id}" if run_id else ""
    )
    record = closing(t, Outcome.FIXED, HealingResult(False, reason=reason), now, phases)
    return replace(record, correlation_id=paged, run_ids=[run_id] if run_id else [])


def gave_up(t: Target, now: datetime, world: World, targets: Mapping[str, Target]) -> HealRecord:
    """The escalation: the target, what it last failed on, and what stays broken with it."""
    reason = f"gave up after {t.attempts} attempts: {t.reason}; needs a person"
    record = closing(
        t, Outcome.GAVE_UP, HealingResult(False, failed=True, reason=reason), now, world.phases
    )
    held = spans(held_by(t.partition, world, targets), world.graph.order)
    cid = t.cid or correlation_id([t.record_id], f"gave-up|{t.key}|{t.attempts}")
    return replace(record, correlation_id=cid, held=held)


def closed(cid: str, asset: str, day: date, phases: Mapping[str, int], now: datetime) -> HealRecord:
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


def held_by(partition: Partition, world: World, targets: Mapping[str, Target]) -> list[Partition]:
    """What stays broken while ``partition`` is: the existing partitions that read it
    (directly or through others), which no refresh may recompute, and the targets it holds."""
    downstream = world.plan([partition], lambda p: False).writes() - {partition}
    waiting = {
        t.partition
        for t in targets.values()
        if t.partition != partition and partition in set(world.broken_inputs(*t.partition))
    }
    return sorted(downstream | waiting, key=lambda p: (p[1], p[0]))


def spans(partitions: Iterable[Partition], order: Sequence[str] = ()) -> list[list[str]]:
    """``[[asset, first, last], ...]``: each asset's dates as runs of consecutive days."""
    by_asset: dict[str, list[date]] = {}
    for asset, day in partitions:
        by_asset.setdefault(asset, []).append(day)
    rank = {a: i for i, a in enumerate(order)}
    return [
        [asset, first.isoformat(), last.isoformat()]
        for asset in sorted(by_asset, key=lambda a: (rank.get(a, len(rank)), a))
        for first, last in day_spans(by_asset[asset])
    ]
