"""What the ``selfheal`` command shows: check outcomes evaluated now, the coverage grid, plans,
heal runs, progress bars. Rendering only; the work happens in lib/ and runs.py."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import date, datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from selfheal_dagster.lib.checks import Outcome, Status, evaluate, window_start, worst
from selfheal_dagster.lib.coverage import read_window
from selfheal_dagster.lib.dates import now_utc
from selfheal_dagster.lib.planner import Plan
from selfheal_dagster.lib.settings import Settings
from selfheal_dagster.lib.warehouse import Warehouse
from selfheal_dagster.tables import TABLES, Table, execution_order

# A pipe or a log file gets a wide fixed width so the coverage grid does not wrap.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def resources() -> dict:
    from selfheal_dagster.defs.resources import build_resources

    return build_resources(Settings.from_env())


def warehouse() -> Warehouse:
    return resources()["warehouse"].open()


CELL_STYLE = {
    Status.OK: "green",
    Status.LATE: "yellow",
    Status.NO_GAMES: "dim",
    Status.NOT_DUE: "dim",
    Status.STALE: "bold red",
    Status.SHORT: "bold red",
    Status.MISSING: "bold red",
}


def evaluate_now(
    days: Sequence[date], tables: Sequence[Table] = TABLES, now: datetime | None = None
) -> list[Outcome]:
    """Evaluate every check for ``tables`` x ``days`` against the warehouse, as of now."""
    found = resources()
    window = read_window(found["warehouse"].open(), window_start(days), max(days))
    targets = [(t, d) for t in tables for d in days]
    return evaluate(targets, window, now or now_utc(), found["source"].scheduled_games)


def _cell(outcome: Outcome, rows: int) -> str:
    style = CELL_STYLE[outcome.status]
    if outcome.status in (Status.OK, Status.LATE):
        return f"[{style}]{rows}[/]"
    if outcome.status is Status.SHORT:
        return f"[{style}]short {rows}/{outcome.metadata['expected_min']}[/]"
    return f"[{style}]{outcome.status.value.replace('_', ' ')}[/]"


def render_grid(outcomes: Sequence[Outcome], days: Sequence[date]) -> RichTable:
    """Tables x dates: one cell per partition, the worse of its two checks."""
    by_cell: dict[tuple[str, date], list[Outcome]] = {}
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
        "[bold red]missing / short / stale[/] failing (heals) · [dim]not due / no games[/]"
    )
    return grid


def failures(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.heals]


def run_dates(
    days: list[date], tables: list[Table], label: str, tags: dict[str, str] | None = None
) -> list:
    from selfheal_dagster import runs

    inst = runs.instance()
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
        task = progress.add_task(label, total=len(days), day="")

        def done(outcome) -> None:
            progress.update(task, advance=1, day=str(outcome.day))
            if not outcome.success:
                failures.append(outcome)

        runs.materialize(days, tables, dagster_instance=inst, tags=tags, on_done=done)
    for outcome in failures:
        for error in outcome.errors or ("run failed",):
            err_console.print(f"[red]✗ {outcome.day} ({outcome.run_id[:8]}): {error}[/]")
    return failures


def render_plan(plan: Plan, title: str) -> RichTable:
    table = RichTable(title=title, header_style="bold")
    for column in ("run", "date", "re-materialise, in order", "failed here", "after"):
        table.add_column(column)
    for n, run in enumerate(plan.runs, start=1):
        table.add_row(
            str(n),
            run.day.isoformat(),
            "\n".join(run.assets),
            "\n".join(a.rsplit("/", 1)[-1] for a in run.failed) or "[dim]refresh[/]",
            ", ".join(d.isoformat() for d in run.after) or "—",
        )
    return table


OUTCOME_STYLE = {
    "healed": "green",
    "failed": "red",
    "gave_up": "bold red",
    "skipped": "yellow",
    "triggered": "cyan",
}


def render_heal_runs(runs: Sequence) -> RichTable:
    """Heal runs as they finished: date, what ran, attempt, outcome."""
    table = RichTable(title="Heal runs", header_style="bold")
    for column in ("run", "date", "assets", "attempt", "correlation", "outcome"):
        table.add_column(column)
    for r in runs:
        style = OUTCOME_STYLE.get(r.outcome, "")
        table.add_row(
            r.run_id[:8],
            r.request.partition_key,
            "\n".join(k.to_user_string() for k in r.request.asset_selection),
            r.request.tags.get("selfheal/attempt", ""),
            r.request.tags.get("selfheal/correlation_id", "")[:8],
            f"[{style}]{r.outcome}[/] {r.reason if r.outcome != 'healed' else ''}",
        )
    return table
