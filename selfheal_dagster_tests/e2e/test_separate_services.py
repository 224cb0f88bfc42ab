"""Dagster as production runs it, as separate processes on one machine: a throwaway Postgres,
the code server (``dagster code-server start``, gRPC), the webserver and the daemon, each
with deploy/dagster.yaml (queued run coordinator, run monitoring) and a workspace that
reaches the code server over gRPC; the embedded warehouse.

The sweep finds a punched gap and the heal sensor heals it through the run queue. While that
heal run is STARTED (its source slowed), the code server is redeployed: stopped as systemd or
a container runtime stops a service (SIGTERM to each of its processes) and started again on
the same port. What Dagster does with the run: the default run launcher started its worker as
a child of the code server, so the worker gets the SIGTERM too; Dagster treats it as an
interrupt and fails the run itself ("Execution was interrupted unexpectedly. No user initiated
termination request was found, treating as failure"). What the heal loop does: the outcome
sensor records the attempt failed, and after the back-off the heal sensor launches attempt 2
through the new code server, which heals. (Had the worker been killed outright, the project's
run reaper would fail the run instead; on Kubernetes a run is a pod of its own and a code
server deploy does not touch it.) The test asks what must hold either way: the gap ends healed
to its exact rows, no history record is left open, no run is left in flight, and both sensors
keep ticking after the deploy."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import TickStatus

from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_SEED
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.core import names
from selfheal_dagster.core.history import FINAL, Outcome
from selfheal_dagster.tables import BY_NAME
from selfheal_dagster_tests.daemon import free_port, graphql, heal_runs, wait_for
from selfheal_dagster_tests.postgres import production_home
from selfheal_dagster_tests.support import (
    DAEMON_HEAL_SECONDS,
    DAEMON_SWEEP_SECONDS,
    PHASE2_HISTORY_DAYS,
    RECENT_SWEEP_DAYS,
    ROOT,
    bound,
    daemon_today,
    game_days_ago,
    load_phase2,
)

BOX = BY_NAME["bdl_player_boxscores"]
IN_FLIGHT = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


class Service:
    """One long-running process (and its children), its output in a log, always stopped."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], logs: Path):
        self.name = name
        self.log = open(logs / f"{name}.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, grace: float = 30) -> None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)
        self.log.close()


def code_server(port: int, env: dict[str, str], logs: Path) -> Service:
    module = ["-m", "selfheal_dagster.definitions", "-h", "127.0.0.1", "-p", str(port)]
    service = Service(
        "code_server", [sys.executable, "-m", "dagster", "code-server", "start", *module], env, logs
    )
    wait_for("the code server", lambda: _serving(port), timeout=bound(180))
    return service


def _serving(port: int) -> bool:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        DagsterGrpcClient(port=port, host="127.0.0.1").ping("deploy")
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def sensor_ticks(instance: dg.DagsterInstance, name: str, after: float) -> list:
    """The ticks of sensor ``name`` that ended after ``after`` (success or skipped)."""
    [state] = [s for s in instance.all_instigator_state() if s.instigator_name == name] or [None]
    if state is None:
        return []
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=50)
    return [
        t
        for t in ticks
        if t.timestamp > after and t.status in (TickStatus.SUCCESS, TickStatus.SKIPPED)
    ]


@pytest.mark.long
def test_the_services_heal_a_gap_and_a_code_server_redeploy_mid_heal_leaves_nothing_open(
    tmp_path, monkeypatch, postgres
):
    today = daemon_today()
    league = League(DEFAULT_SEED)
    old = game_days_ago(league, today, 3, RECENT_SWEEP_DAYS)
    day = old[0]
    home, pg_env = production_home(tmp_path, postgres)
    grpc_port, web_port = free_port(), free_port()
    workspace = tmp_path / "workspace.yaml"
    # deploy/workspace.yaml, pointed at this machine's code server.
    shipped = (ROOT / "deploy" / "workspace.yaml").read_text()
    assert "grpc_server:" in shipped and "port: 4000" in shipped
    workspace.write_text(
        shipped.replace("host: selfheal-code-server", "host: 127.0.0.1").replace(
            "port: 4000", f"port: {grpc_port}"
        )
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))},
        **pg_env,
        "SELFHEAL_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "SELFHEAL_SWEEP_INTERVAL_SECONDS": DAEMON_SWEEP_SECONDS,
        "SELFHEAL_SWEEP_PHASE2_DAYS": str(RECENT_SWEEP_DAYS),
        "SELFHEAL_SWEEP_PHASE4_DAYS": "0",
        "SELFHEAL_HEAL_INTERVAL_SECONDS": DAEMON_HEAL_SECONDS,
        "SELFHEAL_HEAL_BACKOFF_SECONDS": "5",
        # The source answers after 25 s: the heal run is STARTED long enough to deploy under.
        "SELFHEAL_LEAGUE_SLOW": f"{BOX.name}@{day}:25",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    load_phase2(
        warehouse, league, today - timedelta(days=PHASE2_HISTORY_DAYS), today - timedelta(days=1)
    )
    full = warehouse.partition_stats(BOX, day, day)[day].rows
    warehouse.punch_gap(BOX, day)
    instance = dg.DagsterInstance.from_config(str(home))
    assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)

    services: list[Service] = []
    try:
        services.append(code_server(grpc_port, env, tmp_path))
        ws = ["-w", str(workspace)]
        web = [sys.executable, "-m", "dagster_webserver", *ws, "-h", "127.0.0.1"]
        services.append(Service("webserver", [*web, "-p", str(web_port)], env, tmp_path))
        daemon = [str(Path(sys.executable).parent / "dagster-daemon"), "run", *ws]
        services.append(Service("daemon", daemon, env, tmp_path))

        def started():
            for run in heal_runs(instance, day):
                if run.status is dg.DagsterRunStatus.STARTED:
                    return run
            return None

        first = wait_for("a heal run of the gap STARTED", started, timeout=bound(300))
        # It went through the run queue (the coordinator logs the enqueue; the daemon's
        # queue then launched it through the code server).
        enqueued = instance.all_logs(first.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
        assert enqueued, "the heal run did not pass through the run queue"

        # A deploy: the code server stopped (SIGTERM) and started again on the same port.
        services[0].stop()
        deployed = time.time()
        services[0] = code_server(grpc_port, env, tmp_path)

        def healed():
            records = warehouse.history(day=day)
            done = [r for r in records if r.outcome is Outcome.HEALED]
            return done if done and all(r.outcome in FINAL for r in records) else None

        wait_for("the gap healed and every record closed", healed, timeout=bound(420))
        healed_at = time.time()
        # The sensors tick after the deploy: through the new code server.
        for sensor in (names.HEAL_SENSOR, names.SWEEP_SENSOR):
            wait_for(
                f"{sensor} ticking after the deploy",
                lambda s=sensor: sensor_ticks(instance, s, deployed + 5),
                timeout=bound(120),
            )
        # The webserver serves the location from the new code server.
        found = graphql(
            web_port,
            "{ workspaceOrError { ... on Workspace { locationEntries { name "
            "locationOrLoadError { __typename } } } } }",
        )["workspaceOrError"]["locationEntries"]
        assert [(e["name"], e["locationOrLoadError"]["__typename"]) for e in found] == [
            ("selfheal_dagster", "RepositoryLocation")
        ]
        time.sleep(10)  # a few more ticks: nothing new may start

        attempts = sorted(
            (int(r.tags[names.ATTEMPT]), r.status.value) for r in heal_runs(instance, day)
        )
        after = instance.get_run_by_id(first.run_id)
        print(f"the run under the deploy ended {after.status.value}; attempts {attempts}")
        if after.status is dg.DagsterRunStatus.FAILURE:
            [failure] = instance.all_logs(first.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            print(f"  failed with: {failure.dagster_event.message}")
            assert attempts[-1][1] == "SUCCESS" and len(attempts) >= 2
        else:
            assert after.status is dg.DagsterRunStatus.SUCCESS, after.status

        def in_flight() -> list[str]:
            """Runs made before the heal ended and not ended yet (a sweep the sensor queued
            a moment ago is in flight, not stuck: it is given a bound to end)."""
            found = instance.get_run_records(dg.RunsFilter(statuses=list(IN_FLIGHT)))
            return [
                r.dagster_run.run_id
                for r in found
                if r.create_timestamp.timestamp() < healed_at
                and r.dagster_run.job_name != "heal_metrics_job"
            ]

        wait_for("no run left in flight", lambda: not in_flight(), timeout=bound(120))
        assert not [r.id for r in warehouse.history() if r.outcome not in FINAL]
        assert warehouse.partition_stats(BOX, day, day)[day].rows == full
    finally:
        for service in reversed(services):
            service.stop()
        instance.dispose()
