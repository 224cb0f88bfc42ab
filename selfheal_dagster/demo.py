"""``selfheal demo``: the whole story on the embedded default, in about a minute.

Load a week of real partitions through Dagster, punch two gaps (a missing box-score day, a
short-delivered feature store), show the failing checks, let the sweep and the heal sensor do
their work (the same sensor definitions the daemon runs, ticked in this process), and show the
coverage grid healthy again with the heal runs listed.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

from selfheal_dagster import report, runs
from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import Settings, SettingsError, season_start
from selfheal_dagster.core.calendar import game_days, season_of
from selfheal_dagster.core.dates import PARTITION_TAG, date_range, now_utc, today_et
from selfheal_dagster.core.history import summarize
from selfheal_dagster.core.names import CORRELATION_ID, METRICS_JOB
from selfheal_dagster.tables import BY_NAME, TABLES, in_phase

BOX = BY_NAME["bdl_player_boxscores"]
FEATURES = BY_NAME["ml_feature_store_v2"]


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


def gap_days(league: League, week: list[date]) -> tuple[date, date]:
    """Box scores go missing on an early game day (Phase 4 of the later days reads it); the
    feature store is short on the last game day of the week."""
    played = [d for d in week if league.games_on(d)]
    return played[max(0, len(played) - 3)], played[-1]


def run(end: date | None, days: int, today: date) -> int:
    console = report.console
    settings = Settings.from_env()
    if settings.is_prod:
        raise SettingsError(
            "selfheal demo runs on the embedded default: unset SELFHEAL_ENV (it is prod)"
        )
    t0 = time.monotonic()
    if end is None:
        start, end = demo_week(today, days, settings.league_seed)
    else:
        start = end - timedelta(days=days - 1)
    week = [start + timedelta(days=i) for i in range(days)]
    where = "BigQuery" if settings.is_prod else settings.duckdb_path
    console.print(
        f"[bold]selfheal demo[/] — {settings.env} ({settings.warehouse_kind} at {where}), "
        f"league seed {settings.league_seed}, week {start} .. {end}"
    )
    if not _load(week):
        console.print("[red]loading failed; see the errors above[/]")
        return 1
    defs, instance = runs.definitions(), runs.instance()
    loop = runs.LocalLoop(defs, instance)
    loop.start()
    _punch_and_sweep(loop, week, League(settings.league_seed), start, end)
    console.rule("4. The heal sensor heals (ticked here as the daemon would)")
    with report.alerts_on_console():
        healed = loop.heal_until_quiet(on_run=_show)
    loop.sweep(start=start.isoformat(), end=end.isoformat())
    still = _healthy_again(healed, week, defs, instance)
    ok = sum(r.outcome == "healed" for r in healed)
    console.print(
        f"{len(healed)} heal run(s), {ok} healed; {len(still)} failing check(s) left; "
        f"{time.monotonic() - t0:.0f}s in all."
    )
    return 0 if not still and ok == len(healed) else 1


def _load(week: list[date]) -> bool:
    """Step 1: the week, and the Phase 2 history its lookback reads, in two ranged runs."""
    console = report.console
    console.rule("1. Load a week through Dagster")
    lookback = max(t.lookback_days for t in TABLES)
    history_start = max(season_start(), week[0] - timedelta(days=lookback))
    history = date_range(history_start, week[0])[:-1]
    if history:
        console.print(
            f"Phase 2 history for the {lookback}-day Phase 4 lookback: {len(history)} dates"
        )
    # Two ranged runs: Phase 2 of history and week together, then Phase 4 of the week.
    failed = report.run_dates(history + week, in_phase(2), "phase 2, history and week")
    failed += report.run_dates(week, in_phase(4), "phase 4, the week")
    return not failed


def _punch_and_sweep(
    loop: runs.LocalLoop, week: list[date], league: League, start: date, end: date
) -> None:
    """Steps 2 and 3: two gaps punched, and the sweep's checks finding them."""
    console = report.console
    console.rule("2. Punch gaps")
    warehouse = report.warehouse()
    box_day, features_day = gap_days(league, week)
    for table, day, keep in ((BOX, box_day, 0.0), (FEATURES, features_day, 0.6)):
        before, after = warehouse.punch_gap(table, day, keep)
        console.print(f"{table.key} {day}: {before} → {after} rows")
    console.rule("3. The sweep finds them")
    found = loop.sweep(start=start.isoformat(), end=end.isoformat())
    console.print(
        f"sweep: {found['evaluated']} check results over {len(week)} dates, "
        f"{found['warehouse_queries']} warehouse queries (one per table)"
    )
    outcomes = report.evaluate_now(week)
    console.print(report.render_grid(outcomes, week))
    for o in report.failures(outcomes):
        console.print(f"[red]✗[/] {o.table.name} {o.day} {o.check}: {o.reason}")


def _show(done: runs.HealRun) -> None:
    assets = ", ".join(k.to_user_string().split("/")[-1] for k in done.request.asset_selection)
    report.console.print(
        f"  run {done.run_id[:8]} {runs.request_span(done.request)}: {assets} → {done.outcome}"
    )


def _healthy_again(healed: list[runs.HealRun], week: list[date], defs, instance) -> list:
    """Steps 5 and 6: the checks again, the heal runs, today's heal figures, the history;
    returns the checks still failing."""
    console = report.console
    console.rule("5. Healthy again")
    outcomes = report.evaluate_now(week)
    console.print(report.render_grid(outcomes, week))
    console.print(report.render_heal_runs(healed))
    warehouse = report.warehouse()
    records = [
        r
        for cid in sorted({h.request.tags[CORRELATION_ID] for h in healed})
        for r in warehouse.history(correlation_id=cid)
    ]
    # The heal history asset's figures for today (the hourly schedule does this under the
    # daemon), so the UI's plots have today's point.
    runs.execute(
        defs.resolve_job_def(METRICS_JOB),
        instance,
        tags={PARTITION_TAG: today_et(now_utc()).isoformat(), **runs.HERE},
    )
    if records:
        console.rule("6. The heal history")
        console.print(report.render_history(records))
        console.print(report.summary_line(summarize(records)))
        console.print(f"details: selfheal history --correlation-id {records[0].correlation_id[:8]}")
    return report.failures(outcomes)
