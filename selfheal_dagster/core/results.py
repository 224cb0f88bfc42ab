"""What the check results recorded since the heal sensor's cursor say, judged: new failures
to heal, newest passes, and how far the cursor advances. The instance reads the records
(``instance/heal_loop.read_results``); the rules are here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from selfheal_dagster.core.checks import HEALABLE
from selfheal_dagster.core.heal_state import Failure


@dataclass(frozen=True)
class CheckResult:
    """One evaluated, partitioned check result, as recorded."""

    record_id: int
    asset: str
    day: date
    check: str
    passed: bool
    status: str | None  # the status metadata a failing check gives (missing, short, ...)
    reason: str
    at: datetime  # when it was recorded
    read_at: datetime  # when the warehouse read it was computed from started
    run_id: str = ""  # the run that recorded it

    @property
    def healable(self) -> bool:
        return not self.passed and (self.status is None or self.status in HEALABLE)


def newest_passes(results: Iterable[CheckResult]) -> dict[tuple[str, date, str], datetime]:
    """The newest passing result per (asset, date, check)."""
    passes: dict[tuple[str, date, str], datetime] = {}
    for r in results:
        if r.passed:
            key = (r.asset, r.day, r.check)
            passes[key] = max(r.at, passes.get(key, r.at))
    return passes


def pass_runs(results: Iterable[CheckResult]) -> dict[tuple[str, date, str], str]:
    """The run that recorded the newest passing result per (asset, date, check)."""
    newest: dict[tuple[str, date, str], CheckResult] = {}
    for r in results:
        key = (r.asset, r.day, r.check)
        if r.passed and (key not in newest or r.at >= newest[key].at):
            newest[key] = r
    return {key: r.run_id for key, r in newest.items() if r.run_id}


def new_failures(
    results: Sequence[CheckResult], loaded_at: Callable[[str, date], datetime | None]
) -> list[Failure]:
    """The healable failures that still stand. A failure computed from a read that started
    before the partition's last write is not a new failure (the write may have fixed it;
    the loop owns the write's outcome); nor is one a newer pass of the same check answers."""
    passes = newest_passes(results)
    out = []
    for r in results:
        if not r.healable:
            continue
        written = loaded_at(r.asset, r.day)
        if written is not None and written > r.read_at:
            continue
        newer = passes.get((r.asset, r.day, r.check))
        if newer is not None and newer > r.at:
            continue
        out.append(Failure(r.record_id, r.asset, r.day, r.check, r.reason, r.at))
    return out


def advance(
    watermark: int | None, seen: Iterable[int], handled: Iterable[int], floor: int | None
) -> tuple[int, tuple[int, ...]]:
    """The next watermark and the handled ids above it. A check record gets its id when the
    check is planned and its result later, in place: the watermark stays below ``floor``,
    the lowest record still planned in a run in flight."""
    handled = list(handled)
    top = max([watermark or 0, *handled])
    mark = top if floor is None else min(top, floor - 1)
    return mark, tuple(sorted(i for i in {*seen, *handled} if i > mark))
