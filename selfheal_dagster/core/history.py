"""The heal history: one record per (target date, phase, correlation ID).

Records keep the document structure the old system wrote (``phase, target_date,
missing_components, healing_result{triggered, failed, skipped, reason}, correlation_id,
timestamp, success``, id ``{date}_{phase}_{correlation_id[:8]}``) plus what the old system only
planned to measure: outcome, attempt, runs, and time from detection to healed. They live in
the warehouse table ``nba_orchestration.self_heal_history``.

The correlation ID is the *incident's*: a root cause and everything planned for it, over all
its attempts. A retry's records take the attempt as a suffix (``…_{cid[:8]}_2``); the records
that close a target without a run say so (``…_gave_up``, ``…_superseded``), and one record
marks the incident closed (``…_closed``, on its first target's date and phase).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any

DATASET = "nba_orchestration"
TABLE = "self_heal_history"


# What a closing says of a target healed by another incident's run: then its short ID.
HEALED_BY = "healed by incident"


class Outcome(StrEnum):
    TRIGGERED = "triggered"
    HEALED = "healed"
    FAILED = "failed"
    GAVE_UP = "gave_up"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"  # its check passed by other means after an attempt
    CLOSED = "closed"  # the incident's marker: nothing of it is healing or waiting any more
    FIXED = "fixed"  # a target given up on was healed later (a person's heal, or the loop)


FINAL = frozenset(
    {
        Outcome.HEALED,
        Outcome.FAILED,
        Outcome.GAVE_UP,
        Outcome.SKIPPED,
        Outcome.SUPERSEDED,
        Outcome.CLOSED,
        Outcome.FIXED,
    }
)

# column -> logical type; documents round-trip through these columns on every engine.
COLUMNS = {
    "id": "STRING",
    "phase": "STRING",
    "target_date": "DATE",
    "missing_components": "STRING",  # JSON list
    "healing_result": "STRING",  # JSON object {triggered, failed, skipped, reason}
    "correlation_id": "STRING",
    "timestamp": "TIMESTAMP",
    "success": "BOOL",
    "outcome": "STRING",
    "attempt": "INT",
    "assets": "STRING",  # JSON list: what the heal re-materialises
    "run_ids": "STRING",  # JSON list
    "detected_at": "TIMESTAMP",
    "resolved_at": "TIMESTAMP",
    "seconds_to_heal": "FLOAT",
    "alerts": "STRING",  # JSON list of {kind, key, at, via, delivered[, ts, channel]}
    "held": "STRING",  # JSON list of [asset, first, last]: what a give-up leaves broken
    "cause": "STRING",  # the failing check results that opened it (kept when it resolves)
    "waited": "INT",  # launches of this attempt before it that waited for an input
}
# Columns added after the first release (a warehouse from an older version gains them).
ADDED = ("held", "cause", "waited")
# What an outcome changes on a record (alerts are noted separately, by the alerts sensor).
OUTCOME_COLUMNS = (
    "success",
    "outcome",
    "healing_result",
    "run_ids",
    "resolved_at",
    "seconds_to_heal",
)
JSON_COLUMNS = ("missing_components", "healing_result", "assets", "run_ids", "alerts", "held")


def record_id(
    day: date, phase: str, correlation_id: str, attempt: int = 1, kind: str = "", waited: int = 0
) -> str:
    """``{date}_{phase}_{cid[:8]}``; a retry's record ends in its attempt, a closing record
    (gave up, superseded) in what closed it, an attempt launched again after its run waited
    for an input (no attempt spent) in ``_w`` and how many times it waited."""
    base = f"{day.isoformat()}_{phase}_{correlation_id[:8]}"
    if kind:
        return f"{base}_{kind}"
    base = base if attempt <= 1 else f"{base}_{attempt}"
    return f"{base}_w{waited}" if waited else base


@dataclass(frozen=True)
class HealingResult:
    triggered: bool
    failed: bool = False
    skipped: bool = False
    reason: str = ""


@dataclass(frozen=True)
class HealRecord:
    phase: str  # "phase2" | "phase4"
    target_date: date
    missing_components: list[str]
    healing_result: HealingResult
    correlation_id: str
    timestamp: datetime
    success: bool | None = None
    outcome: Outcome = Outcome.TRIGGERED
    attempt: int = 1
    assets: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    detected_at: datetime | None = None
    resolved_at: datetime | None = None
    seconds_to_heal: float | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    held: list[list[str]] = field(default_factory=list)
    cause: str = ""
    waited: int = 0

    @property
    def closing(self) -> bool:
        """A record that closes a target without a run of its own (gave up, superseded)."""
        return not self.healing_result.triggered

    @property
    def id(self) -> str:
        kind = str(self.outcome) if self.closing else ""
        return record_id(
            self.target_date, self.phase, self.correlation_id, self.attempt, kind, self.waited
        )

    def resolved(
        self, outcome: Outcome, at: datetime, reason: str, run_id: str | None = None
    ) -> HealRecord:
        """This record once its outcome is known."""
        healed = outcome is Outcome.HEALED
        return replace(
            self,
            outcome=outcome,
            success=healed,
            healing_result=replace(
                self.healing_result,
                failed=outcome in (Outcome.FAILED, Outcome.GAVE_UP),
                skipped=outcome is Outcome.SKIPPED,
                reason=reason,
            ),
            run_ids=sorted({*self.run_ids, run_id} - {None}),
            resolved_at=at,
            seconds_to_heal=(
                (at - self.detected_at).total_seconds() if healed and self.detected_at else None
            ),
        )

    def with_alert(self, note: dict[str, Any]) -> HealRecord:
        return replace(self, alerts=[*self.alerts, note])

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["id"] = self.id
        row["outcome"] = str(self.outcome)
        for name in JSON_COLUMNS:
            row[name] = json.dumps(row[name], sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> HealRecord:
        values = {k: row.get(k) for k in COLUMNS if k != "id"}
        for name in JSON_COLUMNS:
            values[name] = json.loads(values[name]) if values[name] else []
        values["healing_result"] = HealingResult(**values["healing_result"])
        values["outcome"] = Outcome(values["outcome"])
        values["cause"] = values["cause"] or ""
        values["waited"] = values["waited"] or 0
        return cls(**values)

    def document(self) -> dict[str, Any]:
        """The familiar document, as the old system stored and people query it."""
        doc = asdict(self)
        doc["id"] = self.id
        doc["outcome"] = str(self.outcome)
        for key in ("target_date", "timestamp", "detected_at", "resolved_at"):
            doc[key] = doc[key].isoformat() if doc[key] else None
        return doc


def summarize(records: list[HealRecord]) -> dict[str, Any]:
    """The figures the old system only planned to measure."""
    from statistics import median

    times = [r.seconds_to_heal for r in records if r.seconds_to_heal is not None]
    count = {o: sum(r.outcome is o for r in records) for o in Outcome}
    return {
        "records": len(records),
        "triggered": sum(r.healing_result.triggered for r in records),
        "healed": count[Outcome.HEALED],
        "failed": count[Outcome.FAILED],
        "gave_up": count[Outcome.GAVE_UP],
        "skipped": count[Outcome.SKIPPED],
        "open": count[Outcome.TRIGGERED],
        "median_seconds_to_heal": median(times) if times else None,
    }
