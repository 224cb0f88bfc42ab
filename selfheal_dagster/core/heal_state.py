"""The heal loop's values: what it keeps across ticks (``State``, the heal sensor's cursor),
what it observes in a tick, what it decides. All frozen: a decision returns new values and
can never change the ones it was given.

The cursor's JSON is the one the loop has always written (dates as ISO strings, instants as
epoch seconds), so a cursor written by an earlier version reads back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from selfheal_dagster.core import planner
from selfheal_dagster.core.dates import date_range
from selfheal_dagster.core.history import HealRecord, Outcome

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


def frozen_map(mapping: Mapping | None = None) -> Mapping:
    """A read-only view of a copy: a value no one can change afterwards."""
    return MappingProxyType(dict(mapping or {}))


def _instant(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _seconds(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


# --- what the loop keeps across ticks -------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A failing (asset, date) the loop owns until it closes."""

    asset: str
    day: date
    check: str
    reason: str
    detected_at: datetime
    record_id: int
    state: TargetState = TargetState.OPEN
    attempts: int = 0
    run_key: str | None = None  # the run of the current attempt
    cid: str | None = None  # its incident's correlation ID, from its first attempt on
    holds: int = 0  # runs that found an input missing (no attempt spent, up to a bound)
    launched_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def partition(self) -> Partition:
        return (self.asset, self.day)

    @property
    def key(self) -> str:
        return target_key(self.asset, self.day)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["day"] = self.day.isoformat()
        out["state"] = str(self.state)
        for name in ("detected_at", "launched_at", "ended_at"):
            out[name] = _seconds(out[name])
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Target:
        values = dict(raw)
        values["day"] = date.fromisoformat(values["day"])
        values["state"] = TargetState(values.get("state", TargetState.OPEN))
        for name in ("detected_at", "launched_at", "ended_at"):
            values[name] = _instant(values.get(name))
        return cls(**values)


@dataclass(frozen=True)
class PendingRun:
    """A heal run waiting for the runs of its plan whose output it reads."""

    run_key: str
    day: date
    assets: tuple[str, ...]
    after: tuple[str, ...]  # run keys that must succeed first
    tags: Mapping[str, str]
    created: datetime
    last: date | None = None  # a ranged run's last date

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", frozen_map(self.tags))

    @property
    def days(self) -> list[date]:
        return date_range(self.day, self.last or self.day)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_key": self.run_key,
            "day": self.day.isoformat(),
            "assets": list(self.assets),
            "after": list(self.after),
            "tags": dict(self.tags),
            "created": self.created.timestamp(),
            "last": self.last.isoformat() if self.last else None,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PendingRun:
        return cls(
            run_key=raw["run_key"],
            day=date.fromisoformat(raw["day"]),
            assets=tuple(raw["assets"]),
            after=tuple(raw["after"]),
            tags=raw["tags"],
            created=_instant(raw["created"]),
            last=date.fromisoformat(raw["last"]) if raw.get("last") else None,
        )


@dataclass(frozen=True)
class Launched:
    """A run requested and not yet seen ended: what it writes, when, for which incident."""

    writes: tuple[Partition, ...]
    at: datetime
    cid: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "writes": [[a, d.isoformat()] for a, d in self.writes],
            "at": self.at.timestamp(),
            "cid": self.cid,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Launched:
        writes = tuple((a, date.fromisoformat(d)) for a, d in raw["writes"])
        return cls(writes, _instant(raw["at"]), raw.get("cid"))


@dataclass(frozen=True)
class GaveUp:
    """A target given up on: when, and the check a later pass of which clears it."""

    at: datetime
    check: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.timestamp(), "check": self.check}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> GaveUp:
        return cls(_instant(raw["at"]), raw["check"])


@dataclass(frozen=True)
class OpenIncident:
    """An incident not closed yet: its first target, and when it opened."""

    asset: str
    day: date
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"asset": self.asset, "day": self.day.isoformat(), "at": self.at.timestamp()}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> OpenIncident:
        return cls(raw["asset"], date.fromisoformat(raw["day"]), _instant(raw["at"]))


_PARTS = {"targets": Target, "gave_up": GaveUp, "launched": Launched, "incidents": OpenIncident}


@dataclass(frozen=True)
class State:
    """The heal sensor's cursor."""

    watermark: int | None = None  # every check record id <= this has been handled
    seen: tuple[int, ...] = ()  # handled ids above the watermark
    targets: Mapping[str, Target] = field(default_factory=frozen_map)
    pending: tuple[PendingRun, ...] = ()
    gave_up: Mapping[str, GaveUp] = field(default_factory=frozen_map)  # by target key
    launched: Mapping[str, Launched] = field(default_factory=frozen_map)  # by run key
    incidents: Mapping[str, OpenIncident] = field(default_factory=frozen_map)  # by cid

    def __post_init__(self) -> None:
        for name in _PARTS:
            object.__setattr__(self, name, frozen_map(getattr(self, name)))
        object.__setattr__(self, "seen", tuple(self.seen))
        object.__setattr__(self, "pending", tuple(self.pending))

    def to_json(self) -> str:
        raw: dict[str, Any] = {"watermark": self.watermark, "seen": list(self.seen)}
        for name in _PARTS:
            raw[name] = {k: v.to_json() for k, v in getattr(self, name).items()}
        raw["pending"] = [p.to_json() for p in self.pending]
        return json.dumps(raw, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> State:
        if not text:
            return cls()
        raw = json.loads(text)
        parts = {
            name: {k: kind.from_json(v) for k, v in raw.get(name, {}).items()}
            for name, kind in _PARTS.items()
        }
        return cls(
            watermark=raw.get("watermark"),
            seen=tuple(raw.get("seen", ())),
            pending=tuple(PendingRun.from_json(p) for p in raw.get("pending", ())),
            **parts,
        )

    def with_watermark(self, watermark: int) -> State:
        return replace(self, watermark=watermark)

    def run_keys(self) -> list[str]:
        """Every run key the next tick must know the status of."""
        keys = {t.run_key for t in self.targets.values() if t.run_key}
        keys |= {k for p in self.pending for k in [p.run_key, *p.after]}
        keys |= set(self.launched)
        return sorted(keys)

    def days(self) -> set[date]:
        return {t.day for t in self.targets.values()}


# --- what a tick observes -------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A failed, healable check result."""

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
    run_id: str = ""


@dataclass(frozen=True)
class Observation:
    """Everything a tick decides on, read once (``instance/heal_loop.gather``)."""

    failures: tuple[Failure, ...] = ()
    # The newest new passing result per (asset, date, check).
    passes: Mapping[tuple[str, date, str], datetime] = field(default_factory=frozen_map)
    # The incident (correlation ID) whose heal run recorded a pass, where one did.
    passed_by: Mapping[tuple[str, date, str], str] = field(default_factory=frozen_map)
    runs: Mapping[str, RunStatus] = field(default_factory=frozen_map)  # by run key
    busy: Mapping[Partition, str] = field(default_factory=frozen_map)  # written by a run
    # Partitions given up on whose page is not answered yet: the incident that paged.
    paged: Mapping[Partition, str] = field(default_factory=frozen_map)
    sweeping: bool = False  # a sweep run is in flight: more results of its sweep may follow
    # The cursor's advance over the check records read (``results.advance``); None: no
    # records were read (a person's heal), the cursor stays.
    watermark: int | None = None
    seen: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("passes", "passed_by", "runs", "busy", "paged"):
            object.__setattr__(self, name, frozen_map(getattr(self, name)))
        object.__setattr__(self, "failures", tuple(self.failures))
        object.__setattr__(self, "seen", tuple(self.seen))


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


# A person's heal (``selfheal heal``) keeps every rule of the loop's; it differs only here:
# one attempt, at once (the person is there to see it fail and decide what next).
PERSON = Policy(max_attempts=1, backoff_seconds=0, group_wait_seconds=0)


@dataclass(frozen=True)
class World:
    """What planning and judging read, fixed for one tick, as data (``gather`` reads it;
    nothing here calls back into I/O): the asset graph, which partitions exist, the broken
    inputs of each partition the window can judge, and which (asset, date, check) pass on
    the warehouse as the tick read it (a target not among them still fails)."""

    graph: planner.Graph
    phases: Mapping[str, int]
    today: date
    existing: frozenset[Partition] = frozenset()
    broken: Mapping[Partition, tuple[Partition, ...]] = field(default_factory=frozen_map)
    passing: frozenset[tuple[str, date, str]] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", frozen_map(self.phases))
        object.__setattr__(self, "broken", frozen_map(self.broken))
        object.__setattr__(self, "existing", frozenset(self.existing))
        object.__setattr__(self, "passing", frozenset(self.passing))

    def exists(self, asset: str, day: date) -> bool:
        return (asset, day) in self.existing

    def broken_inputs(self, asset: str, day: date) -> tuple[Partition, ...]:
        return self.broken.get((asset, day), ())

    def still_fails(self, asset: str, day: date, check: str) -> bool:
        return (asset, day, check) not in self.passing

    def plan(self, partitions: list[Partition], repairable) -> planner.Plan:
        return planner.plan(
            partitions, self.graph, self.exists, self.today, self.broken_inputs, repairable
        )


# --- what a tick decides --------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    run_key: str
    day: date
    assets: tuple[str, ...]
    tags: Mapping[str, str]
    last: date | None = None  # a ranged run: every date from ``day`` to ``last``

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", frozen_map(self.tags))

    @property
    def days(self) -> list[date]:
        return date_range(self.day, self.last or self.day)

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
    at: datetime | None = None  # the tick that decided it


@dataclass(frozen=True)
class Decision:
    """What one tick decided. Built fresh by each ``decide``; ``apply`` carries it out."""

    launch: list[Launch] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    records: list[HealRecord] = field(default_factory=list)  # new "triggered" records
    escalations: list[HealRecord] = field(default_factory=list)
    # Records that close without a run: targets superseded after an attempt, incidents done.
    closing: list[HealRecord] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)  # "asset date: healed | superseded | ..."
    gave_up_runs: list[str] = field(default_factory=list)  # last attempts: tag them gave_up
