"""What the ``selfheal`` command shows: check outcomes evaluated now, the coverage grid, plans,
heal runs, progress bars. Rendering only; the work happens in core/, adapters/, instance/ and
runs.py."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import date, datetime

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from selfheal_dagster.adapters.connect import calendar, open_warehouse
from selfheal_dagster.adapters.settings import Settings
from selfheal_dagster.adapters.warehouse import Warehouse, read_window
from selfheal_dagster.core.checks import CheckOutcome, Status, evaluate, window_start, worst
from selfheal_dagster.core.dates import date_range, day_spans, now_utc, span_text
from selfheal_dagster.core.heal_state import Decision, PendingRun
from selfheal_dagster.core.history import HealRecord
from selfheal_dagster.core.names import ATTEMPT, BACKFILL, CORRELATION_ID, FAILED, TARGET_DATE
from selfheal_dagster.tables import TABLES, Table, execution_order

# A pipe or a log file gets a wide fixed width so the coverage grid does not wrap.
console = Console(width=None if sys.stdout.isatty() else 200)
# One line per error: a terminal wraps a long one itself, a log keeps it whole.
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200, soft_wrap=True)


def resources() -> dict:
    """The Dagster resources of runs, initialised (the doctor checks what runs will use)."""
    # import cost: dagster, only where a command needs the resources themselves
    from selfheal_dagster.defs.resources import build_resources, initialized

    return initialized(build_resources(Settings.from_env()))


def warehouse() -> Warehouse:
    """The environment's warehouse, opened without Dagster (``adapters/connect.py``)."""
    return open_warehouse(Settings.from_env())


CELL_STYLE = {
    Status.OK: "green",
    Status.LATE: "yellow",
    Status.NO_GAMES: "dim",
    Status.NOT_DUE: "dim",
    Status.STALE: "bold red",
    Status.SHORT: "bold red",
    Status.MISSING: "bold red",
    Status.SPIKE: "bold red",
    Status.DUPLICATE: "bold red",
    Status.NULL_KEY: "bold red",
}


def evaluate_now(
    days: Sequence[date], tables: Sequence[Table] = TABLES, now: datetime | None = None
) -> list[CheckOutcome]:
    """Evaluate every check for ``tables`` x ``days`` against the warehouse, as of now."""
    settings = Settings.from_env()
    with open_warehouse(settings) as found:
        window = read_window(found, window_start(days), max(days))
    targets = [(t, d) for t in tables for d in days]
    return evaluate(targets, window, now or now_utc(), calendar(settings))


def _cell(outcome: CheckOutcome, rows: int) -> str:
    style = CELL_STYLE[outcome.status]
    if outcome.status in (Status.OK, Status.LATE):
        return f"[{style}]{rows}[/]"
    if outcome.status is Status.SHORT:
        return f"[{style}]short {rows}/{outcome.metadata['expected_min']}[/]"
    if outcome.status is Status.SPIKE:
        return f"[{style}]spike {rows}/{outcome.metadata['expected_max']}[/]"
    if outcome.status is Status.DUPLICATE:
        return f"[{style}]dup {outcome.metadata['duplicated_keys']}/{rows}[/]"
    return f"[{style}]{outcome.status.value.replace('_', ' ')}[/]"


def render_grid(outcomes: Sequence[CheckOutcome], days: Sequence[date]) -> RichTable:
    """Tables x dates: one cell per partition, the worst of its checks."""
    by_cell: dict[tuple[str, date], list[CheckOutcome]] = {}
    for o in outcomes:
        by_cell.setdefault((o.table.name, o.day), []).append(o)
    tables = execution_order([o.table for o in outcomes])
    grid = RichTable(title=f"Coverage {min(days)} .. {max(days)}", header_style="bold")
    grid.add_column("table", no_wrap=True)
    for day in days:
        games = max(o.metadata.get("games", 0) for o in outcomes if o.day == day)
        grid.add_column(f"{day:%m-%d}\n{games} g" if games else f"{day:%m-%d}\n—", justify="right")
    for table in tables:
        cells = []
        for day in days:
            found = by_cell[(table.name, day)]
            rows = next(o.metadata["rows"] for o in found if o.check == "row_count")
            cells.append(_cell(worst(found), rows))
        grid.add_row(f"P{table.phase} {table.name}", *cells)
    grid.caption = (
        "[green]rows[/] ok · [yellow]rows[/] arrived after its deadline · "
        "[bold red]missing / short / spike / dup / stale[/] failing (heals) · "
        "[dim]not due / no games[/]"
    )
    return grid


def failures(outcomes: Sequence[CheckOutcome]) -> list[CheckOutcome]:
    return [o for o in outcomes if o.heals]


def run_dates(
    days: list[date],
    tables: list[Table],
    label: str,
    tags: dict[str, str] | None = None,
    by_phase: bool = True,
) -> list:
    """Materialise ``tables`` for ``days`` as ranged runs (Phase 2 of the range, then Phase 4),
    with a progress bar over the runs; returns the runs that failed, errors printed."""
    # import cost: dagster (about 1.7 s), only for commands that run

    ordered = execution_order(tables)
    phases = sorted({t.phase for t in ordered}) if by_phase else [0]
    steps = [
        (tuple(span), tuple(t for t in ordered if by_phase is False or t.phase == p))
        for span in (date_range(a, b) for a, b in day_spans(days))
        for p in phases
    ]
    return run_steps(steps, label, tags)


def run_steps(steps: list, label: str, tags: dict[str, str] | None = None) -> list:
    """Run each (dates, tables) step with a progress bar over the runs; every run claims the
    whole backfill's range, so the heal loop never heals a date under it. Returns the runs
    that failed, their errors printed (one line each)."""
    # import cost: dagster (about 1.7 s), only for commands that run
    from selfheal_dagster import runs

    inst = runs.instance()
    every = [d for span, _ in steps for d in span]
    tags = {BACKFILL: f"{min(every)}..{max(every)}", **(tags or {})}
    failures = []
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[day]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        dates = len(set(every))
        task = progress.add_task(f"{label} ({dates} dates)", total=len(steps), day="")

        def done(outcome) -> None:
            phase = "/".join(f"phase {p}" for p in outcome.phases)
            progress.update(task, advance=1, day=f"{phase} {outcome.label}")
            if not outcome.success:
                failures.append(outcome)

        runs.run_steps(steps, dagster_instance=inst, tags=tags, on_done=done)
    for outcome in failures:
        for error in outcome.errors or ("run failed",):
            err_console.print(f"[red]✗ {outcome.label} ({outcome.run_id[:8]}): {error}[/]")
    return failures


def incomplete(days: Sequence[date], tables: Sequence[Table]) -> list[CheckOutcome]:
    """The (table, date) partitions that are not complete: their row-count check fails."""
    return [o for o in evaluate_now(days, tables) if o.check == "row_count" and not o.passed]


def incomplete_lines(missing: Sequence[CheckOutcome]) -> list[str]:
    """Incomplete partitions a line per table: how many, their dates, the first reason."""
    by_table: dict[str, list[CheckOutcome]] = {}
    for o in missing:
        by_table.setdefault(o.table.key, []).append(o)
    return [
        f"incomplete: {key}: {span_text(o.day for o in found)}: {found[0].reason}"
        + (" (first)" if len(found) > 1 else "")
        for key, found in by_table.items()
    ]


def decision_runs(decision: Decision, pending: Sequence[PendingRun]) -> list[tuple]:
    """A decision's runs in the order they go: ``(run_key, days, assets, tags, after)``,
    those launched now, then those waiting for them."""
    now = [(x.run_key, x.days, x.assets, x.tags, ()) for x in decision.launch]
    later = [(p.run_key, p.days, p.assets, p.tags, p.after) for p in pending]
    return [*now, *later]


def decision_dict(decision: Decision, pending: Sequence[PendingRun]) -> dict[str, list[str]]:
    """``{"YYYY-MM-DD": ["dataset/table", ...]}`` in execution order."""
    out: dict[str, list[str]] = {}
    for _, days, assets, *_ in decision_runs(decision, pending):
        for day in days:
            out.setdefault(day.isoformat(), []).extend(assets)
    return out


def render_decision(decision: Decision, pending: Sequence[PendingRun], title: str) -> RichTable:
    """What ``apply`` carries out: each run, its incident and attempt, what failed in it,
    and the runs it waits for; the reasons the decision waits, below."""
    runs = decision_runs(decision, pending)
    number = {key: str(n) for n, (key, *_) in enumerate(runs, start=1)}
    table = RichTable(title=title, header_style="bold", caption="\n".join(decision.skipped))
    for column in (
        "run",
        "date(s)",
        "re-materialise, in order",
        "failed here",
        "incident",
        "after",
    ):
        table.add_column(column)
    for key, days, assets, tags, after in runs:
        table.add_row(
            number[key],
            span_text(days),
            "\n".join(assets),
            tags.get(FAILED, "").replace(",", "\n") or "[dim]refresh[/]",
            f"{tags.get(CORRELATION_ID, '')[:8]} #{tags.get(ATTEMPT, '')}",
            ", ".join(f"run {number.get(k, k)}" for k in after) or "—",
        )
    return table


OUTCOME_STYLE = {
    "healed": "green",
    "failed": "red",
    "gave_up": "bold red",
    "skipped": "yellow",
    "triggered": "cyan",
    "superseded": "green",
    "closed": "dim",
}


def render_heal_runs(runs: Sequence) -> RichTable:
    """Heal runs as they finished: date, what ran, attempt, outcome."""
    table = RichTable(title="Heal runs", header_style="bold")
    for column in ("run", "date", "assets", "attempt", "correlation", "outcome"):
        table.add_column(column)
    from selfheal_dagster.runs import request_span  # import cost: dagster, only when rendering

    for r in runs:
        style = OUTCOME_STYLE.get(r.outcome, "default")
        table.add_row(
            r.run_id[:8],
            request_span(r.request),
            "\n".join(k.to_user_string() for k in r.request.asset_selection),
            r.request.tags.get(ATTEMPT, ""),
            r.request.tags.get(CORRELATION_ID, "")[:8],
            f"[{style}]{r.outcome}[/] {r.reason if r.outcome != 'healed' else ''}",
        )
    return table


class _AlertsToConsole(logging.Handler):
    def __init__(self, out: Console) -> None:
        super().__init__(level=logging.INFO)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        style = "yellow" if record.levelno >= logging.WARNING else "orange3"
        title = "alert not delivered" if record.levelno >= logging.WARNING else "alert"
        self.out.print(Panel(text, title=title, border_style=style, expand=False))


@contextmanager
def alerts_on_console(out: Console | None = None):
    """Show alerts (log sink) and Slack delivery warnings as panels while the block runs."""
    logger = logging.getLogger("selfheal.alerts")
    handler = _AlertsToConsole(out or console)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def render_history(records: Sequence[HealRecord]) -> RichTable:
    table = RichTable(title="Heal history", header_style="bold")
    for column in ("id", "outcome", "missing", "attempt", "runs", "to heal", "alerts", "reason"):
        table.add_column(column, overflow="fold")
    for r in records:
        style = OUTCOME_STYLE.get(str(r.outcome), "default")
        alerts = ", ".join(
            f"{a['kind']} {'✓' if a['delivered'] else '✗'} ({a['via']})" for a in r.alerts
        )
        table.add_row(
            r.id,
            f"[{style}]{r.outcome}[/]",
            ", ".join(r.missing_components) or ("—" if r.closing else "[dim]refresh[/]"),
            str(r.attempt),
            "\n".join(run[:8] for run in r.run_ids) or "—",
            _took(r.seconds_to_heal),
            alerts or "—",
            r.healing_result.reason,
        )
    return table


def summary_line(summary: dict) -> str:
    med = summary["median_seconds_to_heal"]
    return (
        f"{summary['triggered']} heal(s) triggered: {summary['healed']} healed, "
        f"{summary['failed']} failed, {summary['gave_up']} gave up, {summary['skipped']} skipped, "
        f"{summary['open']} open; median detection to healed: {_took(med)}"
    )


def render_runs(runs: Sequence) -> RichTable:
    table = RichTable(title="Heal runs", header_style="bold")
    for column in ("run", "date", "attempt", "status", "assets"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.run_id[:8],
            run.tags.get(TARGET_DATE, ""),
            run.tags.get(ATTEMPT, ""),
            run.status.value,
            "\n".join(k.to_user_string() for k in sorted(run.asset_selection or [])),
        )
    return table
