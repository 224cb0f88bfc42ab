"""The production instance for real: deploy/dagster.yaml on a throwaway PostgreSQL server, its
queued run coordinator's limits observed under the real daemon, the heal path recorded."""

import json
import os
import urllib.request
from datetime import timedelta

import dagster as dg

from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.core import names
from selfheal_dagster.core.history import Outcome
from selfheal_dagster.instance.heal_loop import verify
from selfheal_dagster.tables import BY_NAME
from selfheal_dagster_tests.daemon import dagster_dev_running, wait_for
from selfheal_dagster_tests.postgres import production_home
from selfheal_dagster_tests.support import GAME_DAY, SweepingLoop, bound

BOX = BY_NAME["bdl_player_boxscores"]


def test_the_shipped_instance_runs_on_postgres_with_its_coordinator_and_monitoring(
    pg_instance,
):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(pg_instance.run_coordinator, QueuedRunCoordinator)
    assert pg_instance.run_monitoring_enabled
    limits = {
        (limit["key"], json.dumps(limit.get("value"))): limit["limit"]
        for limit in pg_instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
    }
    assert limits[(names.TARGET_DATE, json.dumps({"applyLimitPerUniqueValue": True}))] == 1


def test_a_heal_is_planned_run_verified_and_recorded_on_postgres(history, pg_instance, defs):
    loop = SweepingLoop(defs, pg_instance, history)
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    [request] = loop.tick().run_requests
    assert request.tags[names.TARGET_DATE] == GAME_DAY.isoformat()
    done = loop.run(request)
    assert done.success
    outcome, reason, records = verify(
        pg_instance, pg_instance.get_run_by_id(done.run_id), loop.warehouse
    )
    assert outcome is Outcome.HEALED, reason
    [record] = loop.warehouse.history(day=GAME_DAY)
    assert record.outcome is Outcome.HEALED and record.run_ids == [done.run_id]
    assert loop.tick().run_requests == []  # the healed target is closed
    assert not loop.pending()


def graphql(port, query, variables):
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def test_the_queue_never_runs_two_heals_of_one_date_at_once(
    env, postgres, history, tmp_path, monkeypatch
):
    """Two heal runs for one target date, launched like the UI does: the queued coordinator
    starts the second only after the first ended (tag limit 1 per selfheal/target_date);
    a run for another date is not held back by them."""
    home, pg_env = production_home(tmp_path, postgres)
    other = GAME_DAY - timedelta(days=1)
    dev_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))},
        **pg_env,
        "SELFHEAL_DUCKDB_PATH": str(env / "warehouse.duckdb"),
        # Slow enough to see overlap if the limit did not hold; the heal sensors stay idle.
        "SELFHEAL_LEAGUE_SLOW": f"{BOX.name}@{GAME_DAY}:8,{BOX.name}@{other}:8",
    }
    for key, value in pg_env.items():
        monkeypatch.setenv(key, value)

    def launch(port, day):
        params = {
            "selector": {
                "repositoryLocationName": "selfheal_dagster",
                "repositoryName": "__repository__",
                "jobName": "heal_job",
                "assetSelection": [{"path": list(BOX.key_path)}],
            },
            "executionMetadata": {
                "tags": [
                    {"key": names.TARGET_DATE, "value": day.isoformat()},
                    {"key": "dagster/partition", "value": day.isoformat()},
                ]
            },
            "mode": "default",
        }
        found = graphql(port, LAUNCH, {"params": params})["data"]["launchRun"]
        assert found["__typename"] == "LaunchRunSuccess", found
        return found["run"]["runId"]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        with dagster_dev_running(dev_env, tmp_path / "dagster_dev.log") as dev:
            first, second = launch(dev.port, GAME_DAY), launch(dev.port, GAME_DAY)
            third = launch(dev.port, other)
            ids = [first, second, third]
            seen = []

            def all_done():
                runs = {r.run_id: r.status for r in instance.get_runs(dg.RunsFilter(run_ids=ids))}
                seen.append(runs)
                return all(s == dg.DagsterRunStatus.SUCCESS for s in runs.values()) and runs

            wait_for("the three runs to succeed", all_done, bound(600), interval=0.5)
        found = instance.get_run_records(dg.RunsFilter(run_ids=ids))
        records = {r.dagster_run.run_id: r for r in found}
    started = dg.DagsterRunStatus.STARTED
    assert not any(s[first] == started and s[second] == started for s in seen if len(s) == 3)
    a, b = sorted((records[first], records[second]), key=lambda r: r.start_time)
    assert b.start_time >= a.end_time  # one after the other
    assert records[third].start_time < b.start_time  # another date is not held back
    assert any(s.get(second) == dg.DagsterRunStatus.QUEUED for s in seen)
    wh = DuckDBWarehouse(env / "warehouse.duckdb")
    assert wh.partition_stats(BOX, GAME_DAY, GAME_DAY)[GAME_DAY].rows > 0
