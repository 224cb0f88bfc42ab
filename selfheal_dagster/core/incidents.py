"""Incidents as a person reads them: one root cause and everything done for it.

An incident is every heal history record with one correlation ID: the records of each
attempt (one per date and phase), the records that closed a target without a run (gave up,
superseded) and the marker that it is over. This module turns them into what the alerts say:
what broke, what will run, how each attempt went, what a give-up leaves broken. Plain data in,
plain text out; nothing here sends anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from selfheal_dagster.core.dates import span_text
from selfheal_dagster.core.history import FINAL, HEALED_BY, HealRecord, Outcome
from selfheal_dagster.core.text import more
from selfheal_dagster.tables import PHASE_OWNERS, table_name

MAX_LINES = 8  # lines of one kind in a message before "… and N more"


def first_lines(lines: Sequence[str], limit: int = MAX_LINES) -> list[str]:
    lines = list(lines)
    if len(lines) <= limit:
        return lines
    return [*lines[: limit - 1], f"… {more(len(lines) - limit + 1)}"]


def how(reason: str) -> str:
    """What a failing check said, in a word or a few (the phrases of ``core/checks.py``)."""
    text = reason.lower()
    if "computed before" in text:
        return "stale"
    if found := re.search(r"(\d+) rows for \d+ games: more than .*at most (\d+)", text):
        return f"doubled: {found[1]} rows (at most {found[2]})"
    if found := re.search(r"(\d+) keys .* appear more than once in (\d+) rows", text):
        return f"doubled: {found[2]} rows, {found[1]} duplicated keys"
    if found := re.search(r"(\d+) of \d+ rows have a null", text):
        return f"{found[1]} rows with a NULL key"
    if re.search(r"(?<!\d)0 rows", text) or "not loaded" in text:
        return "missing"
    if "rows for" in text:
        return "short"
    if "read by" in text or "root cause" in text:
        return "missing or short, read by the heal"
    return "failing"


def error(text: str) -> str:
    """A run's error for a person: without the step's name in front (``nba_raw__x: ``)."""
    return re.sub(r"^[a-z0-9_]+__[a-z0-9_]+: ", "", text.strip())


def _phase_label(phase: str) -> str:
    return f"Phase {phase.removeprefix('phase')}"


@dataclass(frozen=True)
class Attempt:
    """One attempt of an incident: the records one heal tick created (same timestamp)."""

    at: datetime
    records: tuple[HealRecord, ...]

    @property
    def attempt(self) -> int:
        return max(r.attempt for r in self.records)

    @property
    def settled(self) -> bool:
        return all(r.outcome in FINAL for r in self.records)

    @property
    def key(self) -> str:
        return f"attempt:{self.at.isoformat()}"

    def repairs(self) -> list[HealRecord]:
        return [r for r in self.records if r.missing_components]

    def refreshes(self) -> list[HealRecord]:
        return [r for r in self.records if not r.missing_components]


@dataclass(frozen=True)
class Incident:
    cid: str
    records: tuple[HealRecord, ...]  # oldest first

    @classmethod
    def of(cls, cid: str, records: Iterable[HealRecord]) -> Incident:
        return cls(cid, tuple(sorted(records, key=lambda r: (r.timestamp, r.id))))

    # --- what it holds -------------------------------------------------------------------

    @property
    def launches(self) -> list[Attempt]:
        by_time: dict[datetime, list[HealRecord]] = {}
        for r in self.records:
            if r.healing_result.triggered:
                by_time.setdefault(r.timestamp, []).append(r)
        return [Attempt(at, tuple(rs)) for at, rs in sorted(by_time.items())]

    def of_outcome(self, outcome: Outcome) -> list[HealRecord]:
        return [r for r in self.records if r.outcome is outcome and r.closing]

    @property
    def gave_up(self) -> list[HealRecord]:
        return self.of_outcome(Outcome.GAVE_UP)

    @property
    def answered(self) -> bool:
        """Every target it gave up on was healed later (a person's heal, or the loop)."""
        fixed = {(a, r.target_date) for r in self.of_outcome(Outcome.FIXED) for a in r.assets}
        return all((a, r.target_date) in fixed for r in self.gave_up for a in r.assets)

    @property
    def closed(self) -> bool:
        """Its marker is written and no record of it is still open."""
        return bool(self.of_outcome(Outcome.CLOSED)) and all(
            r.outcome in FINAL for r in self.records
        )

    @property
    def closed_at(self) -> datetime | None:
        marks = self.of_outcome(Outcome.CLOSED)
        return marks[0].timestamp if marks and self.closed else None

    @property
    def healed_on_first_attempt(self) -> bool:
        launches = self.launches
        return (
            self.closed
            and len(launches) == 1
            and all(r.outcome is Outcome.HEALED for r in launches[0].records)
        )

    @property
    def notes(self) -> list[dict]:
        """What was said of it already, wherever it was noted."""
        return [n for r in self.records for n in r.alerts if "key" in n]

    @property
    def legacy(self) -> bool:
        """Announced by an older version, one message per record: not announced again."""
        return any("key" not in n for r in self.records for n in r.alerts)

    # --- what it says --------------------------------------------------------------------

    def roots(self) -> list[HealRecord]:
        """The first attempt's records of what broke (not its refreshes)."""
        launches = self.launches
        return launches[0].repairs() if launches else []

    def broke(self) -> list[str]:
        """``bdl_player_boxscores 2026-11-21 missing``, one per broken table and date."""
        out = []
        for r in self.roots():
            reason = r.cause or r.healing_result.reason
            parts = {p.split(" ", 1)[0]: p for p in reason.split("; ")}
            for name in r.missing_components:
                out.append(f"{name} {r.target_date} {how(parts.get(name, reason))}")
        return list(dict.fromkeys(out))

    def plan(self) -> str:
        """``… → reload it, then refresh Phase 4 2026-11-22..2026-12-02, 11 dates``."""
        launches = self.launches
        if not launches:
            return ""
        first = launches[0]
        broke = self.broke()
        steps = []
        for phase, verb in (("phase2", "reload"), ("phase4", "recompute")):
            mine = [r for r in first.repairs() if r.phase == phase]
            if not mine:
                continue
            if len(broke) == 1:
                steps.append(f"{verb} it")
            else:
                names = [f"{', '.join(r.missing_components)} {r.target_date}" for r in mine]
                steps.append(f"{verb} {', '.join(first_lines(names, 3))}")
        refresh: dict[str, list[date]] = {}
        for r in first.refreshes():
            refresh.setdefault(r.phase, []).append(r.target_date)
        for phase, days in sorted(refresh.items()):
            steps.append(f"refresh {_phase_label(phase)} {span_text(days)}")
        what = ", ".join(first_lines(broke, 3)) or "a refresh"
        return f"{what} → {', then '.join(steps) or 'nothing to run'}"

    def phases(self) -> str:
        found = sorted({r.phase for r in self.roots()} or {r.phase for r in self.records})
        return ", ".join(_phase_label(p) for p in found)

    def dates(self) -> str:
        days = sorted(
            {r.target_date for r in self.roots()} or {r.target_date for r in self.records}
        )
        return ", ".join(str(d) for d in days[:3]) + (" …" if len(days) > 3 else "")

    def missing_components(self) -> list[str]:
        return sorted({c for r in self.roots() for c in r.missing_components})

    def status(self, max_attempts: int) -> tuple[str, str]:
        """The parent's status line and its colour key: ``healing`` | ``healed`` | ``failed``
        | ``gave_up``. An attempt that healed everything says so at once (the incident then
        closes with nothing more to say)."""
        launches = self.launches
        if not launches:
            return "🔧 Healing", "healing"
        last, attempt = launches[-1], launches[-1].attempt
        healed = last.settled and all(r.outcome is Outcome.HEALED for r in last.records)
        if self.closed and self.gave_up and self.answered:
            names = ", ".join(f"{r.missing_components[0]} {r.target_date}" for r in self.gave_up)
            by = sorted({by for r in self.of_outcome(Outcome.FIXED) if (by := healer(r))})
            return (
                f"✅ Fixed after the give-up: {names} healed by incident {', '.join(by)}",
                "healed",
            )
        if self.closed and self.gave_up:
            names = ", ".join(f"{r.missing_components[0]} {r.target_date}" for r in self.gave_up)
            return f"🚨 Gave up after {attempt} attempt(s): {names}; needs a person", "gave_up"
        if healed:
            ends = [r.resolved_at for r in last.records if r.resolved_at]
            took = max(ends) - self.records[0].timestamp if ends else None
            return f"✅ Healed on attempt {attempt}{_took(took)}", "healed"
        if self.closed and (deferred := self.deferred()):
            return (
                f"✅ Repaired on attempt {attempt}; the refresh of {deferred} waited for an "
                "input another heal was repairing and did not run (the sweep checks it again)",
                "healed",
            )
        if self.closed:
            if by := self.healed_by():
                return f"✅ Healed by the runs of incident {', '.join(by)}", "healed"
            if self.of_outcome(Outcome.SUPERSEDED):
                return f"✅ Resolved by other means after attempt {attempt}", "healed"
            failed = [r for r in last.records if r.outcome is not Outcome.HEALED]
            return f"❌ Ended after attempt {attempt}: {len(failed)} part(s) not healed", "failed"
        if last.settled:
            return (
                f"🔧 Attempt {attempt} of {max_attempts} failed; retrying after back-off",
                "healing",
            )
        return f"🔧 Healing: attempt {attempt} of {max_attempts} running", "healing"

    def deferred(self) -> str:
        """``deferred_refresh`` of the last attempt; "" before any."""
        launches = self.launches
        return deferred_refresh(launches[-1]) if launches else ""

    def healed_by(self) -> list[str]:
        """The incidents whose runs healed what this one's last attempt left (every part of
        it it did not heal itself): their short IDs; [] when something else did, or nothing."""
        launches = self.launches
        if not launches:
            return []
        left = [r for r in launches[-1].records if r.outcome is not Outcome.HEALED]
        superseded = self.of_outcome(Outcome.SUPERSEDED)
        found = [by for r in superseded if (by := healer(r))]
        if not left or not superseded or len(found) < len(superseded):
            return []
        return sorted(set(found))

    def attempt_lines(self, launch: Attempt) -> list[str]:
        """How one attempt went, a line per repair and one per refreshed span."""
        lines = []
        for r in launch.repairs():
            what = f"{', '.join(r.missing_components)} {r.target_date}"
            if r.outcome is Outcome.HEALED:
                verb = "reloaded" if r.phase == "phase2" else "recomputed"
                lines.append(f"✅ {verb} {what}")
            elif r.outcome is Outcome.SKIPPED:
                lines.append(f"⏭️ {what}: {_clip(error(r.healing_result.reason), 160)}")
            else:
                lines.append(f"❌ {what}: {_clip(error(r.healing_result.reason), 200)}")
        spans: dict[tuple[Outcome, str, str], list[date]] = {}
        for r in launch.refreshes():
            reason = r.healing_result.reason if r.outcome is not Outcome.HEALED else ""
            spans.setdefault((r.outcome, r.phase, reason), []).append(r.target_date)
        for (outcome, phase, reason), days in spans.items():
            what = f"{_phase_label(phase)} refresh {span_text(days)}"
            if outcome is Outcome.HEALED:
                lines.append(f"✅ refreshed {_phase_label(phase)} {span_text(days)}")
            elif outcome is Outcome.SKIPPED:
                lines.append(f"⏭️ {what}: {_clip(error(reason), 120)}")
            else:
                lines.append(f"❌ {what}: {_clip(error(reason), 160)}")
        return first_lines(lines)

    def attempt_title(self, launch: Attempt, max_attempts: int) -> str:
        outcomes = {r.outcome for r in launch.records}
        n = launch.attempt
        if outcomes == {Outcome.HEALED}:
            return f"✅ Attempt {n} healed everything"
        if deferred := deferred_refresh(launch):
            return (
                f"✅ Attempt {n} repaired what broke; the refresh of {deferred} waited for an "
                "input and did not run"
            )
        if outcomes == {Outcome.SKIPPED}:  # it waited for an input: no attempt was spent
            return f"⏳ Attempt {n} computed nothing: it waited for an input; no attempt spent"
        left = max_attempts - n
        then = f"retrying ({left} attempt(s) left)" if left > 0 else "no attempts left"
        return f"❌ Attempt {n} of {max_attempts} did not heal everything; {then}"


def healer(record: HealRecord) -> str | None:
    """The short ID of the incident whose run healed the target a closing record closes."""
    found = re.search(rf"{HEALED_BY} (\w+)", record.healing_result.reason)
    return found[1] if found else None


def deferred_refresh(launch: Attempt) -> str:
    """What an attempt left undone when every repair of it healed and only refreshes did
    not run (held, or waiting on a held run): ``Phase 4 2026-11-17..2026-12-02, 15 dates``;
    "" otherwise. Nothing of such an attempt failed."""
    left = [r for r in launch.records if r.outcome is not Outcome.HEALED]
    if not left or any(r.outcome is not Outcome.SKIPPED or r.missing_components for r in left):
        return ""
    by_phase: dict[str, list[date]] = {}
    for r in left:
        by_phase.setdefault(r.phase, []).append(r.target_date)
    return "; ".join(f"{_phase_label(p)} {span_text(d)}" for p, d in sorted(by_phase.items()))


def held_lines(record: HealRecord) -> list[str]:
    """What a give-up leaves broken: the partition itself, then what reads it, as spans."""
    reason = record.healing_result.reason.removesuffix("; needs a person")
    last = error(reason.split(": ", 1)[-1])
    lines = [f"{record.missing_components[0]} {record.target_date}, last error: {_clip(last, 200)}"]
    by_table: dict[str, list[date]] = {}
    for asset, first, last in record.held:
        a, b = date.fromisoformat(first), date.fromisoformat(last)
        by_table.setdefault(asset, []).extend(
            a + timedelta(days=i) for i in range((b - a).days + 1)
        )
    for asset, days in by_table.items():
        lines.append(f"held (reads it, not refreshed): {table_name(asset)} {span_text(days)}")
    return first_lines(lines, 12)


def owner(record: HealRecord) -> str:
    return PHASE_OWNERS.get(int(record.phase.removeprefix("phase")), "—")


def _took(delta: timedelta | None) -> str:
    if delta is None:
        return ""
    seconds = delta.total_seconds()
    if seconds < 120:
        return f" in {seconds:.0f} s"
    if seconds < 7200:
        return f" in {seconds / 60:.0f} min"
    return f" in {seconds / 3600:.1f} h"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
