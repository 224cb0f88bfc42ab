"""The heal loop's promises under the real daemon (``dagster dev`` on 127.0.0.1), faults at once.

- Today's feature store is short while today's odds are missing (not due yet): the heal loads
  the odds first, in the same run, then recomputes; it never computes on the missing odds.
- A gap on D2 heals at once while an outage on D1, which D2 does not read, is retried: the
  outage holds up nothing else.
- The outage, and a source that keeps short-delivering: attempts 1, 2 and 3 spaced by the
  back-off with no new sweep result (the sweep re-asserts only every 30 minutes), then exactly
  one "gave up" each; nothing more after.
- No two heal runs write one partition at once; no history record is left open.
- Slack hangs (a socket that accepts and never answers) all along: the heals above are not
  delayed by it; the alerts sensor tries each alert once, within its bound, and notes it.
- Then a ``selfheal backfill`` of 30 days of Phase 2 while the daemon runs: no heal of what it
  writes, no heal under it, no failed heal; the Phase 4 it made stale is refreshed once, after.
- And ``dagster job backfill -j heal_job`` from the command line against the live instance:
  it runs, and Phase 4 stops on the short input instead of computing on it.
"""

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import dagster as dg
import pytest

from selfheal_dagster import runs
from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_SEED
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.core import names
from selfheal_dagster.core.errors import error_summary
from selfheal_dagster.core.history import Outcome
from selfheal_dagster.defs.checks import check_key
from selfheal_dagster.instance import check_records
from selfheal_dagster.instance.heal_loop import run_days
from selfheal_dagster.tables import BY_NAME, in_phase
from selfheal_dagster_tests.daemon import ROOT, dagster_dev_running, heal_runs, wait_for
from selfheal_dagster_tests.support import (
    DAEMON_HEAL_SECONDS,
    DAEMON_SWEEP_SECONDS,
    bound,
    daemon_today,
    game_days_ago,
    load_phase2,
)

BOX = BY_NAME["bdl_player_boxscores"]
GAMEBOOK = BY_NAME["nbac_gamebook_player_stats"]
ODDS = BY_NAME["odds_api_game_lines"]
FEATURES = BY_NAME["ml_feature_store_v2"]
BACKOFF = 10
WINDOW = 45


def selection(run: dg.DagsterRun) -> set[tuple[str, str]]:
    """Every (asset, date) a run writes: its partition, or each date of its range."""
    days = [d.isoformat() for d in run_days(run)]
    return {(k.to_user_string(), d) for d in days for k in run.asset_selection or ()}


@pytest.fixture
def hanging_slack():
    """A "Slack" on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/services/T0/B0/hanging"
    finally:
        server.close()


@pytest.fixture
def faults(tmp_path, monkeypatch, hanging_slack):
    today = daemon_today()
    league = League(DEFAULT_SEED)
    if not league.games_on(today):
        pytest.skip(f"{today} has no games in the simulated league: the Phase 4 case needs some")
    old = game_days_ago(league, today, 31, WINDOW)
    outage, gap, short = old[0], old[1], old[2]  # out of the lookback of today's Phase 4
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(runs.LOCAL_INSTANCE)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))},
        "DAGSTER_HOME": str(home),
        "SELFHEAL_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "SELFHEAL_LEAGUE_OUTAGES": f"bdl_player_boxscores@{outage}",
        "SELFHEAL_LEAGUE_SHORT": f"nbac_gamebook_player_stats@{short}:0.5",
        "SELFHEAL_SWEEP_INTERVAL_SECONDS": DAEMON_SWEEP_SECONDS,
        "SELFHEAL_SWEEP_PHASE2_DAYS": str(WINDOW),
        "SELFHEAL_SWEEP_PHASE4_DAYS": "1",
        "SELFHEAL_HEAL_INTERVAL_SECONDS": DAEMON_HEAL_SECONDS,
        "SELFHEAL_HEAL_BACKOFF_SECONDS": str(BACKOFF),
        "SLACK_WEBHOOK_URL": hanging_slack,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    # From the oldest date the gap's Phase 4 reads (the last step computes it): a window fixed
    # in days from today left the season's opening night out once today moved past it.
    lookback = max(t.lookback_days for t in in_phase(4))
    first = min(today - timedelta(days=WINDOW), gap - timedelta(days=lookback))
    load_phase2(warehouse, league, first, today - timedelta(days=1))
    for table in (BY_NAME["nbac_schedule"], ODDS):
        warehouse.replace_partition(table, today, league.feed(table.name, today))
    from selfheal_dagster.definitions import defs as load

    instance = dg.DagsterInstance.get()
    [done] = runs.materialize([today], in_phase(4), dagster_instance=instance, defs=load())
    assert done.success, done.errors
    features_rows = warehouse.partition_stats(FEATURES, today, today)[today].rows
    warehouse.punch_gap(BOX, outage)
    warehouse.punch_gap(BOX, gap)
    warehouse.punch_gap(GAMEBOOK, short, keep=0.5)
    warehouse.punch_gap(ODDS, today)
    warehouse.punch_gap(FEATURES, today, keep=0.5)
    return env, instance, warehouse, today, outage, gap, short, features_rows


@pytest.mark.long
def test_the_daemon_keeps_the_heal_promises(faults, tmp_path):
    env, instance, warehouse, today, outage, gap, short, features_rows = faults
    with dagster_dev_running(env, tmp_path / "dagster_dev.log"):

        def settled():
            records = warehouse.history()
            gave_up = {r.target_date for r in records if r.outcome is Outcome.GAVE_UP}
            today_healed = [r for r in heal_runs(instance, today) if r.is_success]
            gap_healed = [r for r in heal_runs(instance, gap) if r.is_success]
            return {outage, short} <= gave_up and today_healed and gap_healed

        wait_for("every fault to end healed or given up", settled, timeout=bound(600))
        time.sleep(20)  # more sweep and heal ticks: nothing new may be launched

        # Today: one heal run, the missing odds loaded first, then the feature store.
        [run] = heal_runs(instance, today)
        written = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        order = [e.dagster_event.asset_key.to_user_string() for e in written]
        assert order == [ODDS.key, FEATURES.key], order
        assert warehouse.partition_stats(FEATURES, today, today)[today].rows == features_rows
        assert warehouse.partition_stats(ODDS, today, today)[today].rows > 0

        # The gap healed at once: before the outage's second attempt, in one run.
        [gap_run] = heal_runs(instance, gap)
        outage_runs = sorted(heal_runs(instance, outage), key=lambda r: r.tags[names.ATTEMPT])
        second = instance.get_run_record_by_id(outage_runs[1].run_id)
        assert instance.get_run_record_by_id(gap_run.run_id).create_timestamp < (
            second.create_timestamp
        )

        # The outage and the short source: 3 attempts each, spaced by the back-off, 1 give-up.
        for day in (outage, short):
            attempts = sorted(heal_runs(instance, day), key=lambda r: r.tags[names.ATTEMPT])
            assert [r.tags[names.ATTEMPT] for r in attempts] == ["1", "2", "3"], day
            records = [instance.get_run_record_by_id(r.run_id) for r in attempts]
            for k, (before, after) in enumerate(zip(records, records[1:], strict=False)):
                waited = after.create_timestamp.timestamp() - before.end_time
                assert waited >= BACKOFF * 2**k - 1, (day, k, waited)
            gave_up = [r for r in warehouse.history(day=day) if r.outcome is Outcome.GAVE_UP]
            assert len(gave_up) == 1 and gave_up[0].attempt == 3
        # The short source's failure was recorded by the sweep once: attempts 2 and 3 came
        # from the back-off, not from new sweep results.
        sweep_results = [
            r
            for r in check_records.history(
                instance, check_key(GAMEBOOK, "row_count"), short, limit=50, failed_only=True
            )
            if instance.get_run_by_id(r.run_id).job_name == "sweep_job"
        ]
        assert len(sweep_results) == 1

        assert_no_concurrent_heals(instance)
        wait_for("every history record closed", lambda: not open_records(warehouse), bound(180))
        # 45 days of Phase 2 were all loaded after their deadlines (late): late passes, so
        # nothing but the faults was healed.
        all_heals = instance.get_runs(dg.RunsFilter(job_name="heal_job"))
        faulted = {d.isoformat() for d in (today, outage, gap, short)}
        assert {r.tags[names.TARGET_DATE] for r in all_heals} == faulted
        gave_up_before = len([r for r in warehouse.history() if r.outcome is Outcome.GAVE_UP])
        # Slack never answered: the alerts sensor tried, noted each alert as not delivered.
        wait_for(
            "an alert tried against the hanging Slack",
            lambda: [a for r in warehouse.history() for a in r.alerts if not a["delivered"]],
            timeout=bound(120),
        )

        # A backfill of 30 days of Phase 2 while the daemon runs.
        first, last = today - timedelta(days=30), today - timedelta(days=1)
        before = {r.run_id for r in instance.get_runs(dg.RunsFilter(job_name="heal_job"))}
        started = time.time()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "selfheal_dagster.cli",
                "backfill",
                "--start",
                str(first),
                "--end",
                str(last),
                "--phase",
                "2",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=bound(900),
        )
        ended = time.time()
        assert out.returncode == 0, out.stdout + out.stderr

        def refreshed():
            new = [
                r
                for r in instance.get_runs(dg.RunsFilter(job_name="heal_job"))
                if r.run_id not in before
            ]
            return new if new and all(r.is_finished for r in new) else None

        new = wait_for("the stale Phase 4 to be refreshed", refreshed, timeout=bound(300))
        time.sleep(20)
        new = [
            r
            for r in instance.get_runs(dg.RunsFilter(job_name="heal_job"))
            if r.run_id not in before
        ]
        # The backfill's own runs (its process exits a moment after the last one ends: under
        # load, more than a second): a heal made before the last of them ended was under it.
        backfilled = [
            instance.get_run_record_by_id(r.run_id)
            for r in instance.get_runs(dg.RunsFilter(tags={names.BACKFILL: f"{first}..{last}"}))
        ]
        assert backfilled and all(r.end_time for r in backfilled)
        backfill_end = max(r.end_time for r in backfilled)
        assert backfill_end <= ended
        for run in new:
            record = instance.get_run_record_by_id(run.run_id)
            made = record.create_timestamp.timestamp()
            assert made >= backfill_end, ("a heal under the backfill", made, backfill_end)
            assert all(day == today.isoformat() for _, day in selection(run))
            assert run.is_success
        assert len(new) == 1  # refreshed once
        assert gave_up_before == len(
            [r for r in warehouse.history() if r.outcome is Outcome.GAVE_UP]
        )
        assert started < ended
        assert_no_concurrent_heals(instance)
        wait_for("every history record closed", lambda: not open_records(warehouse), bound(180))

        # A person backfills heal_job for the gap's date from Dagster's CLI against the live
        # instance: the raw tables load; Phase 4 of that date reads the short-delivered
        # gamebook, so its steps stop naming that input and compute nothing on it.
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "dagster",
                "job",
                "backfill",
                "-w",
                str(ROOT / "workspace.yaml"),
                "-j",
                "heal_job",
                "--from",
                str(gap),
                "--to",
                str(gap),
                "--noprompt",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=bound(300),
        )
        assert out.returncode == 0, out.stdout + out.stderr

        def backfilled():
            found = instance.get_runs(dg.RunsFilter(job_name="heal_job"))
            return [r for r in found if "dagster/backfill" in r.tags and r.is_finished]

        [run] = wait_for("the dagster job backfill run", backfilled, timeout=bound(300))
        failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        errors = [error_summary(e.dagster_event.step_failure_data.error) for e in failures]
        assert errors and all(e.startswith("MissingInput:") for e in errors), errors
        assert any(f"{GAMEBOOK.key}: 1 game day short, {short}" in e for e in errors), errors


def open_records(warehouse) -> list[str]:
    """Records still "triggered": the outcome sensors close them as the runs end."""
    return [r.id for r in warehouse.history() if r.outcome is Outcome.TRIGGERED]


def assert_no_concurrent_heals(instance: dg.DagsterInstance) -> None:
    spans = []
    for run in instance.get_runs(dg.RunsFilter(job_name="heal_job")):
        record = instance.get_run_record_by_id(run.run_id)
        start = record.start_time or record.create_timestamp.timestamp()
        spans.append((selection(run), start, record.end_time or time.time(), run.run_id))
    for i, (writes, start, end, run_id) in enumerate(spans):
        for other, o_start, o_end, o_id in spans[i + 1 :]:
            if writes & other:
                assert end <= o_start or o_end <= start, (run_id, o_id, writes & other)
