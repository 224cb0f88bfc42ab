"""The ``selfheal`` command: demo, init, doctor, backfill, check, status, heal, history, gap.

Every error a person can cause (a bad date, an unknown table, a missing setting) is printed as
one line on stderr with exit code 2; a command that ran but found or left a problem exits 1.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from datetime import date

import click
from rich.table import Table as RichTable

from selfheal_dagster import report
from selfheal_dagster.adapters.settings import Settings, SettingsError, season_start
from selfheal_dagster.adapters.warehouse import WarehouseError
from selfheal_dagster.core.checks import completeness
from selfheal_dagster.core.dates import BadDateError, date_range, first_last, parse_date, today_et
from selfheal_dagster.core.history import summarize
from selfheal_dagster.core.names import CORRELATION_ID, TARGET_DATE
from selfheal_dagster.report import CELL_STYLE, console, err_console
from selfheal_dagster.tables import BY_KEY, Table, UnknownTableError, in_phase, lookup


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


class FractionParam(click.ParamType):
    """A finite number in [0, 1): ``nan`` and ``inf`` are refused like any other bad value."""

    name = "fraction"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not 0.0 <= number < 1.0:
            self.fail(f"{value!r} is not a fraction in [0, 1)", param, ctx)
        return number


DATE = DateParam()
FRACTION = FractionParam()
TABLE = TableParam()


def _check_range(start: date, end: date) -> None:
    if end < start:
        raise click.BadParameter(f"--end {end} is before --start {start}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Keep the basketball-props warehouse whole: load, check, heal."""
    # Every setting is validated before any command writes anything (instance, warehouse).
    Settings.from_env()


@cli.command()
@click.option("--start", type=DATE, required=True, help="First game date.")
@click.option("--end", type=DATE, required=True, help="Last game date (inclusive).")
@click.option("--phase", type=click.Choice(["2", "4"]), help="Only this phase's tables.")
@click.option("--select", "selected", type=TABLE, multiple=True, help="Only these tables.")
@click.option(
    "--no-inputs",
    is_flag=True,
    help="Refuse, naming them, instead of loading the missing inputs the range reads.",
)
def backfill(
    start: date, end: date, phase: str | None, selected: tuple[Table, ...], no_inputs: bool
) -> int:
    """Materialise a range of partitions through Dagster: Phase 2 in one run, then Phase 4 in
    another; first the Phase 2 partitions the range's Phase 4 reads that are missing or short.
    Exit 0 only when every partition is complete afterwards (its row-count check passes)."""
    # import cost: dagster (about 1.7 s), only for commands that run
    from selfheal_dagster import runs

    _check_range(start, end)
    if phase and selected:
        raise click.UsageError("use --phase or --select, not both")
    tables = list(selected) or in_phase(int(phase) if phase else None)
    days = date_range(start, end)
    plan = runs.plan_backfill(days, tables, load_inputs=not no_inputs)
    if plan.too_early:
        err_console.print(
            f"[yellow]cannot load {len(plan.too_early)} input partition(s) the range reads: "
            f"{_partitions(plan.too_early)} come before the first partition "
            f"({season_start()}; SELFHEAL_SEASON sets it)[/]"
        )
    if plan.inputs and no_inputs:
        first, last = plan.inputs[0][1], max(d for _, d in plan.inputs)
        err_console.print(
            f"[red]✗ the range reads {len(plan.inputs)} missing or short partition(s): "
            f"{_partitions(plan.inputs)}[/]"
        )
        err_console.print(
            f"  load them with: selfheal backfill --start {first} --end {last} --phase 2 "
            "(or run this backfill without --no-inputs)"
        )
        return 1
    if plan.inputs:
        console.print(
            f"also loading {_partitions(plan.inputs)}: read by Phase 4 of the range "
            "(--no-inputs refuses instead)"
        )
    failures = report.run_steps(list(plan.steps), f"backfill {len(tables)} table(s)")
    missing = report.incomplete(days, tables)
    total = len(days) * len(tables)
    console.print(
        f"{total - len(missing)}/{total} partition(s) complete over {len(days)} date(s) for "
        f"{', '.join(t.name for t in tables)}; {len(failures)} failed run(s)"
    )
    for line in report.incomplete_lines(missing):
        err_console.print(f"[red]{line}[/]")
    return 1 if failures or missing else 0


def _partitions(found) -> str:
    """``Phase 2 2025-12-10..2026-01-09 (78 partitions of 3 tables)``."""
    phases = sorted({BY_KEY[a].phase for a, _ in found})
    names = sorted({a for a, _ in found})
    return (
        f"Phase {'/'.join(map(str, phases))} {first_last(d for _, d in found)} "
        f"({len(found)} partition(s) of {', '.join(n.rsplit('/', 1)[-1] for n in names)})"
    )


@cli.command()
@click.option("--table", "table", type=TABLE, required=True, help="Table to damage.")
@click.option("--date", "day", type=DATE, required=True, help="Game date to damage.")
@click.option(
    "--keep",
    type=FRACTION,
    default=0.0,
    show_default=True,
    help="Fraction of the rows to keep (0 deletes the whole partition).",
)
@click.option(
    "--copies",
    type=click.IntRange(1, 10),
    default=1,
    show_default=True,
    help="Hold the date's rows this many times over instead (2: a doubled load).",
)
def gap(table: Table, day: date, keep: float, copies: int) -> int:
    """Damage the warehouse to rehearse healing: a gap, a short load, or a doubled one."""
    if copies > 1 and keep:
        raise click.BadParameter("--keep and --copies rehearse different faults: give one")
    with report.warehouse() as warehouse:
        if copies > 1:
            before, after = warehouse.multiply(table, day, copies)
            console.print(f"{table.key} {day} loaded {copies} times over: {before} → {after} rows")
            return 0
        before, after = warehouse.punch_gap(table, day, keep)
    console.print(f"gap punched in {table.key} for {day}: {before} → {after} rows")
    return 0


@cli.command()
def init() -> int:
    """Create the registry's datasets and tables, and the heal history (idempotent)."""
    with report.warehouse() as warehouse:
        warehouse.ensure_tables()
    console.print(
        f"{warehouse.kind}: datasets and tables are in place (an existing table is left as "
        "it is: selfheal doctor checks it)"
    )
    return 0


@cli.command()
@click.option("--date", "day", type=DATE, help="Date of the dry-run statements (yesterday).")
def doctor(day: date | None) -> int:
    """Check the setup, one line per item: credentials, datasets and tables, every statement
    (a free BigQuery dry run), the services and Slack. Exit 0 only when all pass."""
    # import cost: the doctor's checks (Google and Slack clients) only when asked
    from selfheal_dagster import doctor as checkup

    failed = 0
    for line in checkup.run(Settings.from_env(), day):
        console.print(line.render(), highlight=False, soft_wrap=True)
        failed += line.ok is False
    if failed:
        console.print(f"[red]{failed} problem(s)[/]: fix the ✗ lines and run selfheal doctor again")
        return 1
    console.print("[green]all checks passed[/]")
    return 0


@cli.command()
@click.option("--start", type=DATE, required=True)
@click.option("--end", type=DATE, required=True)
def status(start: date, end: date) -> int:
    """Show the coverage grid: tables x dates, ok / failing (why) / not due / no games."""
    _check_range(start, end)
    days = date_range(start, end)
    outcomes = report.evaluate_now(days)
    console.print(report.render_grid(outcomes, days))
    for o in report.failures(outcomes):
        console.print(f"[red]✗[/] {o.table.name} {o.day} {o.check}: {o.reason}")
    return 0


@cli.command()
@click.option("--date", "day", type=DATE, required=True, help="Game date to heal.")
@click.option("--dry-run", is_flag=True, help="Show the plan; launch nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=900,
    show_default=True,
    help="Seconds to wait for runs in flight that write what the heal writes or reads.",
)
def heal(day: date, dry_run: bool, as_json: bool, wait: float) -> int:
    """Evaluate the checks for a date now and heal it as the heal sensor would (one attempt,
    an incident with its alerts and history); --dry-run prints what it would launch."""
    # import cost: dagster (about 1.7 s), only for commands that run
    from selfheal_dagster import runs

    failing = report.failures(report.evaluate_now([day]))
    if not failing:
        if as_json:
            click.echo("{}")
        else:
            console.print(f"{day}: every check passes; nothing to heal.")
        return 0
    if not as_json:
        for o in failing:
            console.print(f"[red]✗[/] {o.table.name} {o.day} {o.check}: {o.reason}")
    defs = runs.definitions()

    def show_plan(heal) -> None:
        if as_json:
            click.echo(json.dumps(report.decision_dict(heal.decision, heal.pending), indent=2))
        else:
            title = f"Heal of {day}" + (" (dry run: nothing launched)" if dry_run else "")
            console.print(report.render_decision(heal.decision, heal.pending, title))

    out = err_console if as_json else console
    try:
        with report.alerts_on_console(out):
            done = runs.heal_now(
                failing,
                defs,
                runs.instance(),
                dry_run=dry_run,
                wait_seconds=wait,
                on_plan=show_plan,
                on_wait=lambda lines: out.print(f"[yellow]waiting[/] {lines[0]}", soft_wrap=True),
                on_run=lambda r: out.print(
                    f"run {r.run_id[:8]} {runs.request_span(r.request)}: {r.outcome} {r.reason}"
                ),
            )
    except runs.HealBusy as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        return 1
    if dry_run:
        return 0
    for line in done.skipped:
        out.print(f"[yellow]skipped[/] {line}")
    return 0 if done.healed else 1


@cli.command()
@click.option("--date", "day", type=DATE, required=True, help="Game date to check.")
@click.option("--phase", type=click.Choice(["2", "4"]), help="Only this phase.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def check(day: date, phase: str | None, as_json: bool) -> int:
    """Is this date complete? Exit 0 when it is, 1 when a table needs healing."""
    phases = [int(phase)] if phase else [2, 4]
    outcomes = report.evaluate_now([day], [t for p in phases for t in in_phase(p)])
    result: dict[str, object] = {"date": day.isoformat()}
    for p in phases:
        mine = [o for o in outcomes if o.table.phase == p]
        result[f"phase{p}"] = {
            **completeness(mine),
            "failing_checks": [
                {
                    "table": o.table.name,
                    "check": o.check,
                    "status": str(o.status),
                    "reason": o.reason,
                }
                for o in report.failures(mine)
            ],
        }
    complete = all(result[f"phase{p}"]["is_complete"] for p in phases)
    if as_json:
        click.echo(json.dumps(result, indent=2))
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
        part = result[f"phase{p}"]
        verdict = "[green]complete[/]" if part["is_complete"] else "[red]incomplete[/]"
        missing = ", ".join(part["missing_processors"]) or "none"
        console.print(f"Phase {p}: {verdict}; missing: {missing}")
    return 0 if complete else 1


@cli.command()
@click.option("--date", "day", type=DATE, help="Only heals of this target date.")
@click.option("--correlation-id", "cid", help="Only this heal (a prefix is enough).")
@click.option("--json", "as_json", is_flag=True, help="Print the history documents as JSON.")
def history(day: date | None, cid: str | None, as_json: bool) -> int:
    """The heal history: each heal, its alerts, runs and outcome, and a summary."""
    records = report.warehouse().history(day=day, correlation_id=cid)
    summary = summarize(records)
    if as_json:
        click.echo(
            json.dumps({"records": [r.document() for r in records], "summary": summary}, indent=2)
        )
        return 0
    if not records:
        console.print("no heal records" + (" match" if day or cid else " yet"))
        return 0
    console.print(report.render_history(records))
    if cid:
        import dagster as dg

        # import cost: dagster (about 1.7 s), only for commands that run
        from selfheal_dagster import runs

        found = []
        for full in sorted({r.correlation_id for r in records}):
            found += runs.instance().get_runs(dg.RunsFilter(tags={CORRELATION_ID: full}))
        if found:
            console.print(
                report.render_runs(sorted(found, key=lambda r: r.tags.get(TARGET_DATE, "")))
            )
    console.print(report.summary_line(summary))
    return 0


@cli.command()
@click.option("--end", type=DATE, help="Last date of the demo week (default: yesterday).")
@click.option("--days", type=click.IntRange(2, 31), default=7, show_default=True)
def demo(end: date | None, days: int) -> int:
    """The whole story on the embedded default: load, break, detect, heal, verify."""
    # import cost: dagster, only for the demo
    from selfheal_dagster import demo as story

    return story.run(end, days, today_et())


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
