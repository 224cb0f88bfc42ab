"""The ``selfheal`` command: demo, backfill, gap, status.

Every error a person can cause (a bad date, an unknown table, a missing setting) is printed as
one line on stderr with exit code 2; a command that ran but found or left a problem exits 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import date, datetime, timedelta

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from selfheal_dagster.lib.checks import (
    Outcome,
    Status,
    completeness,
    evaluate,
    window_start,
    worst,
)
from selfheal_dagster.lib.coverage import read_window
from selfheal_dagster.lib.dates import BadDateError, date_range, now_utc, parse_date, today_et
from selfheal_dagster.lib.league import League, game_days, season_of
from selfheal_dagster.lib.settings import Settings, SettingsError, season_start
from selfheal_dagster.lib.warehouse import Warehouse, WarehouseError
from selfheal_dagster.tables import (
    TABLES,
    Table,
    UnknownTableError,
    execution_order,
    in_phase,
    lookup,
)

# A pipe or a log file gets a wide fixed width so the coverage grid does not wrap.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class DateParam(click.ParamType):
    """A game date inside the partitioned range (season start .. today, US/Eastern)."""

    name = "YYYY-MM-DD"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, date):
            return value
        try:
            day = parse_date(str(value))
        except BadDateError as exc:
            self.fail(str(exc), param, ctx)
        first, last = season_start(), today_et()
        if not first <= day <= last:
            self.fail(
                f"date {day} is out of range: partitions run from {first} to {last}", param, ctx
            )
        return day


class TableParam(click.ParamType):
    name = "TABLE"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        try:
            return lookup(str(value))
        except UnknownTableError as exc:
            self.fail(str(exc), param, ctx)


DATE = DateParam()
TABLE = TableParam()


def _settings() -> Settings:
    return Settings.from_env()


def _warehouse() -> Warehouse:
    from selfheal_dagster.defs.resources import build_resources

    return build_resources(_settings())["warehouse"].open()


def _check_range(start: date, end: date) -> None:
    if end < start:
        raise click.BadParameter(f"--end {end} is before --start {start}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Keep the basketball-props warehouse whole: load, check, heal."""


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
    from selfheal_dagster.defs.resources import build_resources

    resources = build_resources(_settings())
    window = read_window(resources["warehouse"].open(), window_start(days), max(days))
    targets = [(t, d) for t in tables for d in days]
    return evaluate(targets, window, now or now_utc(), resources["source"].scheduled_games)


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


def _failures(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.heals]


def _run_dates(
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


@cli.command()
@click.option("--start", type=DATE, required=True, help="First game date.")
@click.option("--end", type=DATE, required=True, help="Last game date (inclusive).")
@click.option("--phase", type=click.Choice(["2", "4"]), help="Only this phase's tables.")
@click.option("--select", "selected", type=TABLE, multiple=True, help="Only these tables.")
def backfill(start: date, end: date, phase: str | None, selected: tuple[Table, ...]) -> int:
    """Materialise a range of partitions through Dagster, oldest date first."""
    _check_range(start, end)
    if phase and selected:
        raise click.UsageError("use --phase or --select, not both")
    tables = list(selected) or in_phase(int(phase) if phase else None)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    failures = _run_dates(days, tables, f"backfill {len(tables)} table(s)")
    ok = len(days) - len(failures)
    console.print(f"{ok}/{len(days)} date(s) materialised for {', '.join(t.name for t in tables)}")
    return 1 if failures else 0


@cli.command()
@click.option("--table", "table", type=TABLE, required=True, help="Table to damage.")
@click.option("--date", "day", type=DATE, required=True, help="Game date to damage.")
@click.option(
    "--keep",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="Fraction of the rows to keep (0 deletes the whole partition).",
)
def gap(table: Table, day: date, keep: float) -> int:
    """Punch a gap into the warehouse to rehearse healing."""
    before, after = _warehouse().punch_gap(table, day, keep)
    console.print(f"gap punched in {table.key} for {day}: {before} → {after} rows")
    return 0


@cli.command()
@click.option("--start", type=DATE, required=True)
@click.option("--end", type=DATE, required=True)
def status(start: date, end: date) -> int:
    """Show the coverage grid: tables x dates, ok / failing (why) / not due / no games."""
    _check_range(start, end)
    days = date_range(start, end)
    outcomes = evaluate_now(days)
    console.print(render_grid(outcomes, days))
    for o in _failures(outcomes):
        console.print(f"[red]✗[/] {o.table.name} {o.day} {o.check}: {o.reason}")
    return 0


@cli.command()
@click.option("--date", "day", type=DATE, required=True, help="Game date to check.")
@click.option("--phase", type=click.Choice(["2", "4"]), help="Only this phase.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def check(day: date, phase: str | None, as_json: bool) -> int:
    """Is this date complete? Exit 0 when it is, 1 when a table needs healing."""
    phases = [int(phase)] if phase else [2, 4]
    outcomes = evaluate_now([day], [t for p in phases for t in in_phase(p)])
    report: dict[str, object] = {"date": day.isoformat()}
    for p in phases:
        mine = [o for o in outcomes if o.table.phase == p]
        report[f"phase{p}"] = {
            **completeness(mine),
            "failing_checks": [
                {
                    "table": o.table.name,
                    "check": o.check,
                    "status": str(o.status),
                    "reason": o.reason,
                }
                for o in _failures(mine)
            ],
        }
    complete = all(report[f"phase{p}"]["is_complete"] for p in phases)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return 0 if complete else 1
    summary = RichTable(title=f"Completeness {day}", header_style="bold")
    for column in ("phase", "table", "rows", "row_count", "freshness"):
        summary.add_column(column)
    for o in (o for o in outcomes if o.check == "row_count"):
        fresh = next(f for f in outcomes if f.table is o.table and f.check == "freshness")
        summary.add_row(
            str(o.table.phase),
            o.table.name,
            str(o.metadata["rows"]),
            f"[{CELL_STYLE[o.status]}]{o.status.value}[/] {o.reason}",
            f"[{CELL_STYLE[fresh.status]}]{fresh.status.value}[/] {fresh.reason}",
        )
    console.print(summary)
    for p in phases:
        part = report[f"phase{p}"]
        verdict = "[green]complete[/]" if part["is_complete"] else "[red]incomplete[/]"
        missing = ", ".join(part["missing_processors"]) or "none"
        console.print(f"Phase {p}: {verdict}; missing: {missing}")
    return 0 if complete else 1


def demo_week(today: date, days: int, seed: int) -> tuple[date, date]:
    """The last ``days`` dates before today, or the end of the latest regular season if the
    league is in its off-season (so the demo always has games to show)."""
    league = League(seed)
    end = today - timedelta(days=1)
    if any(league.games_on(end - timedelta(days=i)) for i in range(days)):
        return end - timedelta(days=days - 1), end
    year = season_of(end)
    last = max(d for d in game_days(year) if d <= end) if game_days(year)[0] <= end else None
    end = last or game_days(year - 1)[-1]
    return end - timedelta(days=days - 1), end


@cli.command()
@click.option("--end", type=DATE, help="Last date of the demo week (default: yesterday).")
@click.option("--days", type=click.IntRange(1, 31), default=7, show_default=True)
def demo(end: date | None, days: int) -> int:
    """Load a week of real partitions end to end on the embedded default and show coverage."""
    settings = _settings()
    t0 = time.monotonic()
    if end is None:
        start, end = demo_week(today_et(), days, settings.league_seed)
    else:
        start = end - timedelta(days=days - 1)
    lookback = max(t.lookback_days for t in TABLES)
    history_start = max(season_start(), start - timedelta(days=lookback))
    console.print(
        f"[bold]selfheal demo[/] — {settings.env} ({settings.warehouse_kind} at "
        f"{settings.duckdb_path if not settings.is_prod else 'BigQuery'}), league seed "
        f"{settings.league_seed}, week {start} .. {end}"
    )
    failures = []
    if history_start < start:
        history = [history_start + timedelta(days=i) for i in range((start - history_start).days)]
        console.print(
            f"Phase 2 history for the {lookback}-day Phase 4 lookback: {len(history)} dates"
        )
        failures += _run_dates(history, in_phase(2), "phase 2 history")
    week = [start + timedelta(days=i) for i in range(days)]
    failures += _run_dates(week, list(TABLES), "week, all nine tables")
    console.print(render_grid(evaluate_now(week), week))
    console.print(
        f"{len(week)} dates x {len(TABLES)} tables materialised through Dagster in "
        f"{time.monotonic() - t0:.1f}s; {len(failures)} failed run(s)."
    )
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="selfheal", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        code = 130
    except click.ClickException as exc:
        err_console.print(f"error: {exc.format_message()}", highlight=False, soft_wrap=True)
        code = exc.exit_code
    except (SettingsError, UnknownTableError, BadDateError) as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        code = 2
    except WarehouseError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        code = 1
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
