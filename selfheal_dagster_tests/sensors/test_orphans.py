"""Runs whose worker was killed are found and failed (the run reaper), with a real instance
and a real worker process killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from selfheal_dagster.defs.reaper import run_reaper
from selfheal_dagster.instance import orphans
from selfheal_dagster_tests.support import bound

WORKER = """
import sys, time
import dagster as dg

@dg.op
def hang():
    open(sys.argv[2], "w").write("started")
    time.sleep(600)

@dg.job
def hanging():
    hang()

with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
    hanging.execute_in_process(instance=instance)
"""


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "dagster_home"
    path.mkdir()
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path


def start_worker(home, tmp_path):
    marker = tmp_path / "started"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(home), str(marker)])
    deadline = time.monotonic() + bound(120)
    while not marker.exists():
        assert worker.poll() is None, "the worker exited before its op started"
        assert time.monotonic() < deadline, "the worker's op never started"
        time.sleep(0.2)
    return worker


def later(seconds: float = 3600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_a_started_run_whose_worker_was_killed_is_failed_with_one_line(home, tmp_path):
    worker = start_worker(home, tmp_path)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            [run] = instance.get_runs()
            assert run.status == dg.DagsterRunStatus.STARTED
            assert orphans.worker_pid(instance, run.run_id) == worker.pid
            assert orphans.find(instance, later()) == []  # its worker is alive
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=bound(30))
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
            assert orphans.find(instance, datetime.now(UTC)) == []  # within its grace
            [orphan] = orphans.find(instance, later())
            assert (orphan.run_id, orphan.pid) == (run.run_id, worker.pid)
            [line] = orphans.fail(instance, [orphan])
            assert f"pid {worker.pid}" in line and "is gone" in line and "\n" not in line
            ended = instance.get_run_by_id(run.run_id)
            assert ended.status == dg.DagsterRunStatus.FAILURE
            [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            assert "is gone" in failure.dagster_event.message
            assert orphans.find(instance, later()) == []  # failed once, not again
            assert orphans.fail(instance, [orphan]) == []
    finally:
        if worker.poll() is None:
            worker.kill()


def test_the_reaper_sensor_fails_orphans_and_says_so(home, tmp_path, monkeypatch):
    worker = start_worker(home, tmp_path)
    try:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=bound(30))
        monkeypatch.setattr(orphans, "GRACE_SECONDS", 0.0)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            [run] = instance.get_runs()
            result = run_reaper(dg.build_sensor_context(instance=instance))
            assert "is gone" in result.skip_message and run.run_id in result.skip_message
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
            again = run_reaper(dg.build_sensor_context(instance=instance))
            assert again.skip_message == "no orphaned runs"
    finally:
        if worker.poll() is None:
            worker.kill()


def test_a_reused_pid_is_not_the_worker():
    me = orphans.process_started_at(os.getpid())
    assert me is not None and me <= time.time()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert orphans.process_started_at(dead.pid) is None


MID_WRITE = """
import sys, time
from datetime import date
from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_SEED
from selfheal_dagster.adapters.warehouse import duckdb as engine
from selfheal_dagster.tables import BY_NAME

real = engine.DuckDBWarehouse._exec

def stalling(self, con, sql, params=None):
    out = real(self, con, sql, params)
    if sql.startswith("INSERT"):  # the old rows are deleted, new ones half inserted
        open(sys.argv[2], "w").write("mid-write")
        time.sleep(600)
    return out

engine.DuckDBWarehouse._exec = stalling
box = BY_NAME["bdl_player_boxscores"]
day = date.fromisoformat(sys.argv[3])
days = [date.fromordinal(day.toordinal() - k) for k in (2, 1, 0)]
league = League(DEFAULT_SEED)
engine.DuckDBWarehouse(sys.argv[1]).replace_partitions(
    box, {d: league.feed(box.feed, d) for d in days}
)
"""


def test_a_writer_killed_mid_range_write_leaves_every_partition_as_it_was(history, tmp_path):
    from selfheal_dagster.tables import BY_NAME
    from selfheal_dagster_tests.support import GAME_DAY

    box = BY_NAME["bdl_player_boxscores"]
    days = [GAME_DAY - timedelta(days=k) for k in (2, 1, 0)]
    history.punch_gap(box, days[1], keep=0.5)  # the new rows would differ from these
    query = f"SELECT * FROM {history.ref(box)} WHERE game_date BETWEEN $a AND $b ORDER BY ALL"
    before = history.query(query, {"a": days[0], "b": days[-1]})
    marker = tmp_path / "mid-write"
    writer = subprocess.Popen(
        [sys.executable, "-c", MID_WRITE, history.path, str(marker), str(days[-1])]
    )
    try:
        deadline = time.monotonic() + bound(120)
        while not marker.exists():
            assert writer.poll() is None, "the writer exited before its write"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=bound(30))
    finally:
        if writer.poll() is None:
            writer.kill()
    assert history.query(query, {"a": days[0], "b": days[-1]}) == before
