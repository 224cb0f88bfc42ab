"""Dagster's own ``dg`` CLI on this project, as a person runs it from the project root.

``[tool.dg]`` in pyproject.toml makes the checkout a ``dg`` project: ``dg check defs``,
``dg list defs``, ``dg launch`` and ``dg dev`` read the code location from it.
"""

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from selfheal_dagster import runs
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.core.checks import CHECKS
from selfheal_dagster.tables import TABLES, in_phase
from selfheal_dagster_tests.daemon import ROOT, dagster_dev_running, graphql, wait_for
from selfheal_dagster_tests.support import bound

DG = Path(sys.executable).parent / "dg"


@pytest.fixture
def dg_env(tmp_path):
    """The project's virtual environment active (as `dg` expects), a fresh warehouse and a
    Dagster home holding the project's local instance configuration."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(runs.LOCAL_INSTANCE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))}
    venv = Path(sys.executable).parent.parent
    env.update(
        DAGSTER_HOME=str(home),
        SELFHEAL_DUCKDB_PATH=str(tmp_path / "warehouse.duckdb"),
        VIRTUAL_ENV=str(venv),
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def dg(env, *args):
    if not DG.exists():
        pytest.skip("dagster-dg-cli is not installed (it is in the dev dependencies)")
    return subprocess.run(
        [str(DG), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=bound(300)
    )


def test_dg_check_defs_loads_the_project(dg_env):
    out = dg(dg_env, "check", "defs")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All definitions loaded successfully" in out.stdout + out.stderr
    assert "does not match the virtual environment" not in out.stderr


def test_dg_list_defs_lists_the_tables_their_checks_jobs_sensors_and_schedules(dg_env):
    out = dg(dg_env, "list", "defs", "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    tables = {a["asset_key"] for a in found["assets"] if a["group_name"] in ("phase2", "phase4")}
    assert tables == {t.key for t in TABLES}  # the nine tables (and the heal figures)
    assert len(found["asset_checks"]) == len(TABLES) * len(CHECKS) == 27
    checks = {(c["asset_key"], c["name"]) for c in found["asset_checks"]}
    assert checks == {(t.key, name) for t in TABLES for name in CHECKS}
    assert {"daily_job", "heal_job", "sweep_job"} <= {j["name"] for j in found["jobs"]}
    assert {"heal_sensor", "sweep_sensor", "alerts_sensor"} <= {s["name"] for s in found["sensors"]}
    assert [s["name"] for s in found["schedules"]] == ["heal_metrics_schedule"]


def test_dg_launch_writes_a_partition_range_in_one_run(dg_env, tmp_path):
    import dagster as dg_

    first = date(2026, 1, 10)
    days = [first + timedelta(days=i) for i in range(5)]
    out = dg(
        dg_env,
        "launch",
        "--assets",
        "group:phase2",
        "--partition-range",
        f"{days[0]}...{days[-1]}",
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    for table in in_phase(2):  # five game days: rows on every one of them
        stats = wh.partition_stats(table, days[0], days[-1])
        assert sorted(stats) == days and all(s.rows > 0 for s in stats.values()), table.name
    with dg_.DagsterInstance.from_config(dg_env["DAGSTER_HOME"]) as instance:
        [record] = instance.get_run_records()  # the whole range in ONE run
    tags = record.dagster_run.tags
    assert record.dagster_run.is_success
    assert (
        tags["dagster/asset_partition_range_start"],
        tags["dagster/asset_partition_range_end"],
    ) == (
        str(days[0]),
        str(days[-1]),
    )


def test_dg_dev_serves_the_project_on_the_projects_instance(dg_env, tmp_path):
    if not DG.exists():
        pytest.skip("dagster-dg-cli is not installed (it is in the dev dependencies)")
    # A run recorded in this instance beforehand: dg dev must show it (it is the same one).
    launched = dg(
        dg_env, "launch", "--assets", "nba_raw/nbac_schedule", "--partition", "2026-01-10"
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    with dagster_dev_running(dg_env, tmp_path / "dg_dev.log", dg_cli=True) as dev:
        found = wait_for(
            "the code location in dg dev",
            lambda: _location(dev.port),
            timeout=bound(180),
        )
        runs_seen = graphql(dev.port, "{ runsOrError { ... on Runs { results { runId } } } }")
    assert found["name"] == "selfheal_dagster"
    [repository] = found["locationOrLoadError"]["repositories"]
    assert len(repository["assetNodes"]) == len(TABLES) + 1  # and the heal figures
    assert len(runs_seen["runsOrError"]["results"]) >= 1
    log = (tmp_path / "dg_dev.log").read_text()
    assert "Welcome to Dagster" not in log and "Telemetry:" not in log


LOCATIONS = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name
    locationOrLoadError { ... on RepositoryLocation { repositories { assetNodes { id } } } }
} } } }
"""


def _location(port: int) -> dict | None:
    try:
        entries = graphql(port, LOCATIONS)["workspaceOrError"]["locationEntries"]
    except Exception:  # noqa: BLE001 - the server is still starting
        return None
    for entry in entries:
        loaded = entry.get("locationOrLoadError") or {}
        if loaded.get("repositories"):
            return entry
    return None
