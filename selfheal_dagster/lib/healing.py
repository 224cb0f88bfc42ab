"""The heal sensor's decisions, as plain functions over plain data.

Given new failed check results and what the instance knows about earlier heal runs, decide
which runs to launch now, which to launch later (a date whose run reads another date's heal),
which failures to skip and why, and which targets to give up on. Nothing here touches Dagster;
``defs/heal.py`` gathers the inputs and turns the decision into run requests.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta

from selfheal_dagster.lib import planner
from selfheal_dagster.lib.history import HealingResult, HealRecord, Outcome

CORRELATION_ID = "selfheal/correlation_id"
ATTEMPT = "selfheal/attempt"
PHASE = "selfheal/phase"
TARGET_DATE = "selfheal/target_date"
RUN_KEY = "selfheal/run_key"
FAILED = "selfheal/failed"
DETECTED_AT = "selfheal/detected_at"
_NAMESPACE = uuid.UUID("5e1f4ea1-0000-4000-8000-00000000da75")
PENDING_TTL = timedelta(hours=6)


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
class TargetRuns:
    """Heal runs of one (asset, date) today since its check last passed: how many, the last
    end, one still in flight; and when it last passed (None: not today)."""

    attempts: int = 0
    last_ended: datetime | None = None
    in_flight: str | None = None
    passed_at: datetime | None = None


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    backoff_seconds: float = 300.0  # wait before attempt 2; doubles before each later one

    def next_allowed(self, runs: TargetRuns) -> datetime | None:
        if runs.attempts == 0 or runs.last_ended is None:
            return None
        return runs.last_ended + timedelta(seconds=self.backoff_seconds * 2 ** (runs.attempts - 1))


@dataclass
class PendingRun:
    run_key: str
    day: str
    assets: list[str]
    after: list[str]  # run keys that must succeed first
    tags: dict[str, str]
    created: float


@dataclass
class State:
    """The heal sensor's cursor."""

    watermark: int | None = None  # every check record id <= this has been handled
    seen: list[int] = field(default_factory=list)  # handled ids above the watermark
    pending: list[PendingRun] = field(default_factory=list)
    gave_up: dict[str, float] = field(default_factory=dict)  # target -> when we escalated

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> State:
        if not text:
            return cls()
        raw = json.loads(text)
        raw["pending"] = [PendingRun(**p) for p in raw.get("pending", [])]
        return cls(**raw)


@dataclass(frozen=True)
class Launch:
    run_key: str
    day: date
    assets: tuple[str, ...]
    tags: dict[str, str]


@dataclass
class Decision:
    launch: list[Launch] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    records: list[HealRecord] = field(default_factory=list)  # new history records
    escalations: list[HealRecord] = field(default_factory=list)
    dropped: list[PendingRun] = field(default_factory=list)  # dependents whose prerequisite failed


def correlation_id(record_ids: Iterable[int]) -> str:
    """Deterministic per batch of failures, so a re-evaluated tick gets the same ID."""
    return str(uuid.uuid5(_NAMESPACE, ",".join(map(str, sorted(record_ids)))))


def _run_key(day: date, batch: str) -> str:
    return f"selfheal-{day.isoformat()}-{batch}"


def phase_of(asset: str, phases: Mapping[str, int]) -> str:
    return f"phase{phases[asset]}"


def decide(
    state: State,
    failures: list[Failure],
    runs: Mapping[tuple[str, date], TargetRuns],
    prerequisite_status: Mapping[str, str],
    graph: planner.Graph,
    exists: Callable[[str, date], bool],
    phases: Mapping[str, int],
    now: datetime,
    today: date,
    policy: Policy,
) -> Decision:
    """One tick. ``prerequisite_status`` maps a heal run key to SUCCESS / FAILURE / CANCELED /
    IN_FLIGHT (absent: not submitted yet)."""
    decision = Decision()
    launched: set[tuple[str, date]] = set()

    # Dependents whose prerequisite runs succeeded go now; a failed prerequisite drops them.
    keep = []
    for p in state.pending:
        statuses = [prerequisite_status.get(k) for k in p.after]
        if all(s == "SUCCESS" for s in statuses):
            decision.launch.append(
                Launch(p.run_key, date.fromisoformat(p.day), tuple(p.assets), p.tags)
            )
            launched.update((a, date.fromisoformat(p.day)) for a in p.assets)
        elif any(s in ("FAILURE", "CANCELED") for s in statuses) or (
            now.timestamp() - p.created > PENDING_TTL.total_seconds()
        ):
            decision.dropped.append(p)
        else:
            keep.append(p)
    state.pending = keep
    waiting = {(a, date.fromisoformat(p.day)) for p in keep for a in p.assets}

    day_start = now - timedelta(days=1)
    state.gave_up = {k: at for k, at in state.gave_up.items() if at > day_start.timestamp()}

    latest: dict[tuple[str, date], Failure] = {}
    for f in sorted(failures, key=lambda f: f.record_id):
        latest[(f.asset, f.day)] = f
    heal: list[Failure] = []
    for (asset, day), f in sorted(latest.items(), key=lambda kv: kv[1].record_id):
        key = target_key(asset, day)
        seen = runs.get((asset, day), TargetRuns())
        if seen.in_flight or (asset, day) in launched or (asset, day) in waiting:
            where = f"run {seen.in_flight}" if seen.in_flight else "a planned run"
            decision.skipped.append(f"{asset} {day}: heal already queued or running ({where})")
            continue
        gave_up = state.gave_up.get(key)
        if gave_up and (seen.passed_at is None or seen.passed_at.timestamp() < gave_up):
            if seen.attempts >= policy.max_attempts:
                decision.skipped.append(f"{asset} {day}: gave up today; waiting for a person")
                continue
            del state.gave_up[key]  # a new day: the attempts are back
        if seen.attempts >= policy.max_attempts:
            state.gave_up[key] = now.timestamp()
            cid = correlation_id([f.record_id])
            decision.escalations.append(
                HealRecord(
                    phase=phase_of(asset, phases),
                    target_date=day,
                    missing_components=[short(asset)],
                    healing_result=HealingResult(
                        triggered=False,
                        failed=True,
                        reason=f"gave up after {seen.attempts} attempts today: {f.reason}; "
                        "needs a person",
                    ),
                    correlation_id=cid,
                    timestamp=now,
                    success=False,
                    outcome=Outcome.GAVE_UP,
                    attempt=seen.attempts,
                    assets=[asset],
                    detected_at=f.detected_at,
                    resolved_at=now,
                )
            )
            continue
        allowed = policy.next_allowed(seen)
        if allowed and now < allowed:
            decision.skipped.append(
                f"{asset} {day}: backing off after attempt {seen.attempts} until "
                f"{allowed:%H:%M:%S} UTC"
            )
            continue
        heal.append(f)

    if not heal:
        return decision

    cid = correlation_id(f.record_id for f in heal)
    plan = planner.plan([(f.asset, f.day) for f in heal], graph, exists, today)
    launches, records = plan_runs(plan, heal, runs, phases, now, cid, f"{cid[:8]}")
    decision.records += records
    for launch, after in launches:
        if after:
            state.pending.append(
                PendingRun(
                    run_key=launch.run_key,
                    day=launch.day.isoformat(),
                    assets=list(launch.assets),
                    after=after,
                    tags=launch.tags,
                    created=now.timestamp(),
                )
            )
        else:
            decision.launch.append(launch)
    return decision


def plan_runs(
    plan: planner.Plan,
    heal: list[Failure],
    runs: Mapping[tuple[str, date], TargetRuns],
    phases: Mapping[str, int],
    now: datetime,
    cid: str,
    batch: str,
) -> tuple[list[tuple[Launch, list[str]]], list[HealRecord]]:
    """Run keys, tags and "triggered" history records for a plan.

    Returns each run with the run keys it must wait for, and one history record per (date,
    phase) of the plan. ``batch`` makes the run keys unique per batch of failed evaluations.
    """
    keys = {r.day: _run_key(r.day, batch) for r in plan.runs}
    by_target = {(f.asset, f.day): f for f in heal}
    launches, records = [], []
    for run in plan.runs:
        mine = [by_target[(a, run.day)] for a in run.failed]
        # The attempt at the failures that caused this run (a refresh-only run: its roots').
        attempt = 1 + max(runs.get((f.asset, f.day), TargetRuns()).attempts for f in mine or heal)
        run_phases = sorted({phases[a] for a in (run.failed or run.assets)})
        detected = min((f.detected_at for f in mine), default=min(f.detected_at for f in heal))
        tags = {
            CORRELATION_ID: cid,
            ATTEMPT: str(attempt),
            PHASE: ",".join(map(str, run_phases)),
            TARGET_DATE: run.day.isoformat(),
            RUN_KEY: keys[run.day],
            FAILED: ",".join(short(a) for a in run.failed),
            DETECTED_AT: detected.isoformat(),
        }
        launches.append(
            (Launch(keys[run.day], run.day, run.assets, tags), [keys[d] for d in run.after])
        )
        upstream = ", ".join(f"{short(f.asset)} {f.day}" for f in heal if f.day < run.day)
        for phase in sorted({phases[a] for a in run.assets}):
            reasons = "; ".join(
                f"{short(f.asset)} {f.check}: {f.reason}" for f in mine if phases[f.asset] == phase
            )
            records.append(
                HealRecord(
                    phase=f"phase{phase}",
                    target_date=run.day,
                    missing_components=[short(a) for a in run.failed if phases[a] == phase],
                    healing_result=HealingResult(
                        triggered=True, reason=reasons or f"refresh: reads the healed {upstream}"
                    ),
                    correlation_id=cid,
                    timestamp=now,
                    attempt=attempt,
                    assets=[a for a in run.assets if phases[a] == phase],
                    detected_at=detected,
                )
            )
    return launches, records
