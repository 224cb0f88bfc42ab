"""The ``selfheal`` command: demo, backfill, gap, status.

Every error a person can cause (a bad date, an unknown table, a missing setting) is printed as
one line on stderr with exit code 2; a command that ran but found or left a problem exits 1.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import date, timedelta

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from selfheal_dagster.lib.coverage import Window, read_window
from selfheal_dagster.lib.dates import BadDateError, parse_date, today_et
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


def render_coverage(window: Window, tables: Sequence[Table] = TABLES) -> RichTable:
    """Tables x dates: row counts, with no-game days and holes marked."""
    grid = RichTable(title=f"Coverage {window.start} .. {window.end}", header_style="bold")
    grid.add_column("table", no_wrap=True)
    for day in window.days:
        games = window.games(day)
        grid.add_column(f"{day:%m-%d}\n{games} g" if games else f"{day:%m-%d}\n—", justify="right")
    for table in execution_order(list(tables)):
        cells = []
        for day in window.days:
            rows = window.rows(table, day)
            if rows:
                cells.append(str(rows))
            elif window.games(day):
                cells.append("[bold red]missing[/]")
            else:
                cells.append("[dim]no games[/]")
        grid.add_row(f"P{table.phase} {table.name}", *cells)
    return grid


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
    """Show the coverage grid: tables x dates."""
    _check_range(start, end)
    console.print(render_coverage(read_window(_warehouse(), start, end)))
    return 0


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
    console.print(render_coverage(read_window(_warehouse(), start, end)))
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
