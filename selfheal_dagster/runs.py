"""Launch real Dagster runs of the code location from Python (the CLI, the demo, tests).

Runs execute in this process against the Dagster instance in ``DAGSTER_HOME`` (default
``.selfheal/dagster_home``, the same one ``make dev`` uses), so they show up in the UI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

import dagster as dg

from selfheal_dagster.tables import Table, execution_order

DEFAULT_DAGSTER_HOME = ".selfheal/dagster_home"
DAILY_JOB = "daily_job"
# The CLI prints its own progress; runs log warnings and errors to the console, the rest to
# the instance's event log (visible in the UI).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def instance() -> dg.DagsterInstance:
    """The persistent instance of ``DAGSTER_HOME``, created under the project when unset."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path(DEFAULT_DAGSTER_HOME).resolve())
        config = Path(home) / "dagster.yaml"
        if not config.exists():
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


@cache
def definitions() -> dg.Definitions:
    from selfheal_dagster.definitions import defs

    return defs()


@dataclass(frozen=True)
class RunOutcome:
    day: date
    run_id: str
    success: bool
    errors: tuple[str, ...]


def materialize(
    days: Iterable[date],
    tables: Iterable[Table],
    *,
    dagster_instance: dg.DagsterInstance,
    defs: dg.Definitions | None = None,
    tags: Mapping[str, str] | None = None,
    on_done: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """One run per date, oldest first, of the chosen tables in dependency order.

    Dates go oldest first because Phase 4 of a date reads Phase 2 of the dates before it.
    """
    job = (defs or definitions()).resolve_job_def(DAILY_JOB)
    keys = [dg.AssetKey(t.key_path) for t in execution_order(list(tables))]
    outcomes = []
    for day in sorted(days):
        result = job.execute_in_process(
            partition_key=day.isoformat(),
            instance=dagster_instance,
            asset_selection=keys,
            raise_on_error=False,
            run_config=QUIET,
            tags=dict(tags or {}),
        )
        errors = tuple(
            f"{e.step_key}: {error_summary(e.step_failure_data.error)}"
            for e in result.get_step_failure_events()
            if e.step_failure_data.error
        )
        outcome = RunOutcome(day=day, run_id=result.run_id, success=result.success, errors=errors)
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)
    return outcomes


def error_summary(error) -> str:
    """One line from a Dagster error: the innermost cause, without the module path."""
    while error.cause is not None:
        error = error.cause
    lines = [line for line in error.message.strip().splitlines() if line.strip()]
    line = lines[0] if lines else "failed"
    kind, sep, rest = line.partition(": ")
    return f"{kind.rsplit('.', 1)[-1]}: {rest}" if sep and "." in kind else line
