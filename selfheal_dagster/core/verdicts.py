"""What a finished heal run achieved, from what its events say: the run's verdict, and the
outcome of each (date, phase) it covered. ``instance/heal_loop.py`` reads the events and
records these on the heal history and the run's tags.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from selfheal_dagster.core.checks import MissingInput
from selfheal_dagster.core.heal_state import Partition
from selfheal_dagster.core.history import Outcome

PHASE_HEALED = "{n} table(s) written, their checks passing"
EVERY_DATE_HEALED = "every date's tables written, their checks passing"


@dataclass(frozen=True)
class RunEvents:
    """What a finished run's event log says, as text."""

    succeeded: bool
    status: str  # the run's status, e.g. "FAILURE"
    step_errors: Sequence[str] = ()  # "step: Error: message", one per failed step
    run_messages: Sequence[str] = ()  # the run's own failure or cancel message
    failing_checks: Sequence[str] = ()  # "asset check: why", one per failing result
    check_results: int = 0


def verdict(events: RunEvents) -> tuple[Outcome, str]:
    """Healed when the run succeeded and every check it ran passes. A run that failed only
    because an input was missing computed nothing: held (skipped), not failed; the loop waits
    for that input and a person is told what holds it."""
    if not events.succeeded:
        errors = list(events.step_errors)
        if errors and all(f"{MissingInput.__name__}:" in e for e in errors):
            return Outcome.SKIPPED, "held: " + "; ".join(errors)
        if not errors:  # failed or canceled from outside: the run's own failure message
            errors = list(events.run_messages[-1:])
        said = "; ".join(e for e in errors if e)
        return Outcome.FAILED, said or f"run {events.status.lower()}"
    if events.failing_checks:
        return Outcome.FAILED, "run succeeded but checks still fail: " + "; ".join(
            events.failing_checks
        )
    return Outcome.HEALED, f"{events.check_results} check result(s) in the run, none failing"


def per_phase(
    run: tuple[Outcome, str],
    *,
    days: Iterable[date],
    assets: Sequence[str],
    healed: frozenset[Partition],
    phases: Mapping[str, int],
) -> list[tuple[date, int, Outcome, str]]:
    """Each (date, phase) of a run and its outcome: the run's, except that a (date, phase)
    whose every table was written with its checks passing healed anyway (a run whose Phase 2
    step hit an outage may still have healed its Phase 4; a ranged run that failed on one
    date may have healed the others)."""
    out = []
    for day in days:
        for phase in sorted({phases[a] for a in assets}):
            mine = {(a, day) for a in assets if phases[a] == phase}
            if run[0] is not Outcome.HEALED and mine <= healed:
                out.append((day, phase, Outcome.HEALED, PHASE_HEALED.format(n=len(mine))))
            else:
                out.append((day, phase, *run))
    return out


def overall(run: tuple[Outcome, str], recorded: Sequence[Outcome]) -> tuple[Outcome, str]:
    """The run's outcome for its tags: healed if every record it resolved healed."""
    if run[0] is not Outcome.HEALED and recorded and all(o is Outcome.HEALED for o in recorded):
        return Outcome.HEALED, EVERY_DATE_HEALED
    return run
