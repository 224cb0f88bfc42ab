"""``selfheal doctor`` against the strict BigQuery double, the scraper service and Slack on
127.0.0.1: a healthy project passes every line; each planted fault is one ✗ line that names
the fix, and exit 1. Locally it checks the DuckDB file."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from selfheal_dagster import cli
from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_SEED
from selfheal_dagster.tables import TABLES
from selfheal_dagster_tests import prod_scenario
from selfheal_dagster_tests.support import BQ_LOCATION, BQ_PROJECT, ROOT, bigquery_warehouse, bound


@pytest.fixture
def prod(bigquery, httpserver, monkeypatch, env):
    """Production settings: the double for BigQuery, the scraper service and Slack's Web API
    on the local HTTP server; the datasets and tables created by ``selfheal init``."""
    httpserver.expect_request("/scrapers/", method="GET").respond_with_data("no route", 404)
    httpserver.expect_request("/slack/api/auth.test", method="POST").respond_with_json(
        {"ok": True, "user": "selfheal", "team": "props"}
    )
    values = {
        "SELFHEAL_ENV": "prod",
        "SELFHEAL_BQ_PROJECT": BQ_PROJECT,
        "SELFHEAL_BQ_LOCATION": BQ_LOCATION,
        "PHASE1_SCRAPER_URL": httpserver.url_for("/scrapers/"),
        "SLACK_BOT_TOKEN": "xoxb-doctor-test",
        "SLACK_CHANNEL": "#props-alerts",
        "SELFHEAL_SLACK_API_URL": httpserver.url_for("/slack/api/"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert selfheal("init")[0] == 0
    return bigquery


def selfheal(*args: str) -> tuple[int, list[str]]:
    """The command in this process: its exit code and the lines it printed."""
    from selfheal_dagster.report import console

    with console.capture() as captured:
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code or 0
    return code, [line for line in captured.get().splitlines() if line.strip()]


def marks(lines: list[str]) -> dict[str, list[str]]:
    return {m: [line for line in lines if line.startswith(m)] for m in "✓✗·"}


def test_a_healthy_project_passes_every_line_and_says_what_a_heal_reads(prod):
    with bigquery_warehouse() as wh:  # a month of Phase 2 for the heal to read
        prod_scenario.load_phase2(wh, League(DEFAULT_SEED), prod_scenario.history_days())
    code, lines = selfheal("doctor", "--date", "2026-01-20")
    found = marks(lines)
    assert code == 0, "\n".join(lines)
    assert found["✗"] == [] and found["·"] == []
    text = "\n".join(lines)
    for table in TABLES:
        assert f"✓ table {table.dataset}.{table.name}: as the registry declares it" in text
    assert "✓ credentials: selfheal@nba-props-prod.iam.gserviceaccount.com, token minted" in text
    dry = [line for line in lines if line.startswith("✓ dry run ")]
    assert len(dry) >= 20 and all("would read" in line for line in dry)
    [heal] = [line for line in lines if "one-date heal" in line]
    assert re.search(r"would read about [\d.]+ (KiB|MiB) for 2026-01-20", heal), heal
    assert any(
        "Phase 1 scraper service: reachable" in line and "ID token" in line for line in lines
    )
    assert "✓ Slack bot: signed in as selfheal on props, posting to #props-alerts" in text
    assert lines[-1] == "all checks passed"
    dry_jobs = [j for j in prod.received if j.config.get("dryRun")]
    assert dry_jobs and prod.refused == []
    assert all(j.labels["component"] == "doctor" for j in dry_jobs)


def _table(prod, name: str, columns: str, partition: str) -> None:
    """Replace a registry table by a platform table shaped otherwise."""
    state = next(t for t in TABLES if t.name == name)
    prod.admin(f"DROP TABLE `{BQ_PROJECT}.{state.dataset}.{name}`")
    prod.admin(
        f"CREATE TABLE `{BQ_PROJECT}.{state.dataset}.{name}` ({columns}) "
        f"PARTITION BY {partition} OPTIONS (require_partition_filter = TRUE)"
    )


def _columns(name: str, required: str | None = None) -> str:
    from selfheal_dagster.adapters.warehouse.bigquery import TYPES

    table = next(t for t in TABLES if t.name == name)
    cols = [f"{c.name} {TYPES[c.type]}" for c in table.columns] + ["_loaded_at TIMESTAMP"]
    return ", ".join(c + (" NOT NULL" if c.split()[0] == required else "") for c in cols)


FAULTS = {
    "partitioned by another column": (
        lambda prod, monkeypatch: _table(
            prod, "odds_api_game_lines", _columns("odds_api_game_lines"), "DATE(snapshot_at)"
        ),
        "table nba_raw.odds_api_game_lines: nba_raw.odds_api_game_lines is partitioned by "
        "snapshot_at, not game_date: recreate it with PARTITION BY game_date",
    ),
    "a REQUIRED column": (
        lambda prod, monkeypatch: _table(
            prod,
            "player_daily_cache",
            _columns("player_daily_cache", required="_loaded_at"),
            "game_date",
        ),
        "nba_predictions.player_daily_cache._loaded_at is REQUIRED, which a query's result "
        "cannot fill: ALTER TABLE nba_predictions.player_daily_cache ALTER COLUMN _loaded_at "
        "DROP NOT NULL",
    ),
    "a missing dataset": (
        lambda prod, monkeypatch: prod.drop_dataset("nba_orchestration"),
        "dataset nba_orchestration: missing: run selfheal init",
    ),
    "a 403 on one table": (
        lambda prod, monkeypatch: prod.forbid("nba_raw", "bdl_player_boxscores"),
        "table nba_raw.bdl_player_boxscores: 403: grant "
        "selfheal@nba-props-prod.iam.gserviceaccount.com roles/bigquery.dataEditor",
    ),
    "the scraper service down": (
        lambda prod, monkeypatch: monkeypatch.setenv("PHASE1_SCRAPER_URL", _closed_port()),
        "Phase 1 scraper service: unreachable at http://127.0.0.1:",
    ),
}


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_each_planted_fault_is_one_line_naming_the_fix(prod, monkeypatch, fault):
    plant, said = FAULTS[fault]
    plant(prod, monkeypatch)
    code, lines = selfheal("doctor", "--date", "2026-01-20")
    failed = marks(lines)["✗"]
    assert code == 1
    assert len(failed) == 1, "\n".join(lines)
    assert said in failed[0], failed[0]
    assert "Traceback" not in "\n".join(lines)


def test_the_command_on_a_fresh_local_checkout_says_to_run_init(env):
    code, lines = selfheal("doctor")
    assert code == 1
    assert marks(lines)["✗"] == [
        f"✗ warehouse: no DuckDB file at {env / 'warehouse.duckdb'}: run selfheal init"
    ]
    assert selfheal("init")[0] == 0
    code, lines = selfheal("doctor")
    assert code == 0, lines
    assert "✓ tables: all 10 in warehouse.duckdb" in lines


def test_doctor_is_a_command_a_person_runs(env):
    """As a newcomer types it: a process of its own, its exit code."""
    out = subprocess.run(
        [sys.executable, "-m", "selfheal_dagster.cli", "doctor"],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=bound(120),
    )
    assert out.returncode == 1 and "run selfheal init" in out.stdout
    assert out.stderr.strip() == ""
