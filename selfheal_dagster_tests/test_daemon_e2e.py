"""End to end under the real daemon: ``dagster dev`` on 127.0.0.1 heals with no human action.

Two game days whose Phase 2 deadline has passed: on one the box scores are deleted (the sweep
finds the hole, the heal sensor launches a run, the run succeeds, the check passes again); on
the other the simulated source is down for good (exactly three attempts, one "gave up", and no
further runs however long the daemon keeps going). Then ``dagster job backfill`` of
``heal_job`` is launched from the command line against the running instance.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from selfheal_dagster import runs
from selfheal_dagster.defs.checks import check_key
from selfheal_dagster.lib import check_records, healing
from selfheal_dagster.lib.dates import today_et
from selfheal_dagster.lib.errors import error_summary
from selfheal_dagster.lib.history import Outcome
from selfheal_dagster.lib.league import League
from selfheal_dagster.lib.settings import DEFAULT_SEED
from selfheal_dagster.lib.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.tables import BY_NAME, in_phase
from selfheal_dagster_tests.conftest import bound, load_phase2

ROOT = Path(__file__).resolve().parents[1]
BOX = BY_NAME["bdl_player_boxscores"]
DEADLINE_SECONDS = bound(600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, predicate, timeout: float, interval: float = 2.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def heal_runs(instance: dg.DagsterInstance, day: date) -> list[dg.DagsterRun]:
    return list(
        instance.get_runs(
            dg.RunsFilter(job_name="heal_job", tags={healing.TARGET_DATE: day.isoformat()})
        )
    )


@pytest.fixture
def scenario(tmp_path, monkeypatch):
    """Two recent game days, Phase 2 loaded for the whole watch window, two gaps."""
    today = today_et()
    league = League(DEFAULT_SEED)
    played = [
        today - timedelta(days=i) for i in range(2, 400) if league.games_on(today - timedelta(i))
    ]
    healable, outage = played[0], played[1]
    window = (today - outage).days
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(runs.LOCAL_INSTANCE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))}
    env.update(
        DAGSTER_HOME=str(home),
        SELFHEAL_DUCKDB_PATH=str(tmp_path / "warehouse.duckdb"),
        SELFHEAL_LEAGUE_OUTAGES=f"bdl_player_boxscores@{outage}",
        SELFHEAL_SWEEP_INTERVAL_SECONDS="5",
        SELFHEAL_SWEEP_REASSERT_MINUTES="0",
        SELFHEAL_SWEEP_PHASE2_DAYS=str(window),
        SELFHEAL_SWEEP_PHASE4_DAYS="0",
        SELFHEAL_HEAL_INTERVAL_SECONDS="5",
        SELFHEAL_HEAL_BACKOFF_SECONDS="2",
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    load_phase2(warehouse, league, today - timedelta(days=window), today - timedelta(days=1))
    # A few days materialised through Dagster, into the instance the daemon will use.
    from selfheal_dagster.definitions import defs as load

    instance = dg.DagsterInstance.get()
    outcomes = runs.materialize([healable], in_phase(2), dagster_instance=instance, defs=load())
    assert all(o.success for o in outcomes)
    warehouse.punch_gap(BOX, healable)
    warehouse.punch_gap(BOX, outage)
    return env, instance, warehouse, healable, outage


@contextmanager
def dagster_dev_running(env: dict[str, str], log_path: Path) -> Iterator[int]:
    """``dagster dev`` (webserver and daemon) on a free loopback port, always stopped."""
    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            str(ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            "the webserver",
            lambda: _up(f"http://127.0.0.1:{port}/server_info"),
            timeout=bound(240),
        )
        yield port
    finally:
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        log.close()


@pytest.fixture
def dagster_dev(scenario, tmp_path):
    with dagster_dev_running(scenario[0], tmp_path / "dagster_dev.log") as port:
        yield port


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_the_daemon_heals_a_gap_and_gives_up_on_a_permanent_outage(scenario, dagster_dev):
    env, instance, warehouse, healable, outage = scenario
    started = time.monotonic()

    def healed():
        done = [r for r in heal_runs(instance, healable) if r.status == dg.DagsterRunStatus.SUCCESS]
        if not done:
            return None
        [latest, *_] = check_records.history(instance, check_key(BOX, "row_count"), healable)
        return done if latest.status == check_records.SUCCEEDED else None

    [run, *_] = wait_for("the gap to be healed", healed, timeout=DEADLINE_SECONDS)
    assert run.tags[healing.ATTEMPT] == "1" and run.tags[healing.PHASE] == "2"
    assert warehouse.partition_stats(BOX, healable, healable)[healable].rows > 0
    wait_for(
        "the healed outcome in the history",
        lambda: any(r.outcome is Outcome.HEALED for r in warehouse.history(day=healable)),
        timeout=bound(120),
    )

    def gave_up():
        return [r for r in warehouse.history(day=outage) if r.outcome is Outcome.GAVE_UP]

    remaining = DEADLINE_SECONDS - (time.monotonic() - started)
    wait_for("giving up on the outage", gave_up, timeout=max(remaining, bound(120)))
    time.sleep(25)  # several more sweep and heal ticks: nothing new may be launched
    attempts = heal_runs(instance, outage)
    assert len(attempts) == 3
    assert sorted(r.tags[healing.ATTEMPT] for r in attempts) == ["1", "2", "3"]
    assert all(r.status == dg.DagsterRunStatus.FAILURE for r in attempts)
    assert len(gave_up()) == 1
    failed = [r for r in warehouse.history(day=outage) if r.outcome is Outcome.FAILED]
    assert len(failed) == 3 and all("SourceOutage" in r.healing_result.reason for r in failed)

    # A person backfills heal_job from the command line against the running instance.
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
            healable.isoformat(),
            "--to",
            healable.isoformat(),
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
        done = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
        return [r for r in found if "dagster/backfill" in r.tags and r.status in done]

    [run] = wait_for("the backfill run", backfilled, timeout=bound(300))
    # heal_job is every table of the date: Phase 4 of it reads the outage's box scores, so
    # its steps fail naming that input and write nothing; the raw tables load.
    assert run.status == dg.DagsterRunStatus.FAILURE
    failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    errors = [error_summary(e.dagster_event.step_failure_data.error) for e in failures]
    assert any(f"nba_raw/bdl_player_boxscores {outage} has no rows" in e for e in errors), errors
    for table in in_phase(4):
        assert not warehouse.partition_stats(table, healable, healable).get(healable)
