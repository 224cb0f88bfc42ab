"""A heal in production mode, end to end, offline, under the real daemon (``dagster dev``):
``SELFHEAL_ENV=prod`` with BigQuery as the strict double, the scraper and Phase 4 services and
Slack on 127.0.0.1. A gap found by the sweep is healed by the heal sensor to a "healed"
outcome, every job listed and none refused; then a run terminated from the UI's API cancels
the BigQuery job it was waiting on."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import date, timedelta

import dagster as dg
import pytest
from werkzeug import Request, Response

from selfheal_dagster import runs
from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_SEED
from selfheal_dagster.core import history
from selfheal_dagster.tables import BY_NAME, in_phase
from selfheal_dagster_tests.daemon import dagster_dev_running, graphql, launch_run, wait_for
from selfheal_dagster_tests.support import (
    BQ_LOCATION,
    BQ_PROJECT,
    DAEMON_HEAL_SECONDS,
    RECENT_SWEEP_DAYS,
    bigquery_warehouse,
    bound,
    daemon_today,
    game_days_ago,
)

BOX = BY_NAME["bdl_player_boxscores"]
CACHE = BY_NAME["player_daily_cache"]
COMPOSITE = BY_NAME["player_composite_factors"]
ONE_SWEEP = "3600"  # no second sweep while the test runs
# The gap is a recent game day in the sweep's window; Phase 4 exists only for the three days
# after it (the heal refreshes those), and Phase 2 holds their lookback.
WINDOW = RECENT_SWEEP_DAYS

TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunFailure { message }
    ... on PythonError { message }
  }
}
"""


class Platform:
    """The platform's services as they behave: the scraper service loads a table's date into
    BigQuery itself; the Phase 4 service computes a processor's date there."""

    def __init__(self, league: League) -> None:
        self.league = league
        self.calls: list[Request] = []

    def scrape(self, request: Request) -> Response:
        self.calls.append(request)
        table = BY_NAME[request.path.rsplit("/", 1)[-1]]
        day = date.fromisoformat(request.args["game_date"])
        with bigquery_warehouse("platform-scraper") as wh:
            rows = wh.replace_partition(table, day, self.league.feed(table.feed, day)).rows
        return Response(f'{{"status": "loaded", "rows": {rows}}}', 200, mimetype="application/json")

    def phase4(self, request: Request) -> Response:
        self.calls.append(request)
        table = BY_NAME[request.path.rsplit("/", 1)[-1]]
        day = date.fromisoformat(request.args[table.partition_column])
        with bigquery_warehouse("platform-phase4") as wh:
            rows = wh.run_processor(table, [day]).rows
        return Response(
            f'{{"status": "computed", "rows": {rows}}}', 200, mimetype="application/json"
        )


@pytest.fixture
def production(bigquery, httpserver, tmp_path):
    """Phase 2 for the window, Phase 4 for the three days after a game day X, then X's box
    scores deleted; the environment ``dagster dev`` runs with."""
    today = daemon_today()
    league = League(DEFAULT_SEED)
    old = game_days_ago(league, today, 5, WINDOW)
    gap = old[0]
    after = [gap + timedelta(days=i) for i in (1, 2, 3)]
    days = [today - timedelta(days=i) for i in range(WINDOW + 31, 0, -1)]
    with bigquery_warehouse("setup") as wh:
        wh.ensure_tables()
        for table in in_phase(2):
            wh.replace_partitions(table, {d: league.feed(table.feed, d) for d in days})
        for table in in_phase(4):
            wh.run_processor(table, after)
        full = wh.partition_stats(BOX, gap, gap)[gap].rows
        wh.punch_gap(BOX, gap)
    platform = Platform(league)
    for table in in_phase(2):
        httpserver.expect_request(f"/scrapers/{table.feed}", method="POST").respond_with_handler(
            platform.scrape
        )
    httpserver.expect_request(f"/phase4/{CACHE.name}", method="POST").respond_with_handler(
        platform.phase4
    )
    slack: list[dict] = []
    httpserver.expect_request("/slack", method="POST").respond_with_handler(
        lambda r: (slack.append(r.get_json()), Response("ok"))[1]
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(runs.LOCAL_INSTANCE)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))},
        "DAGSTER_HOME": str(home),
        "SELFHEAL_ENV": "prod",
        "SELFHEAL_BQ_PROJECT": BQ_PROJECT,
        "SELFHEAL_BQ_LOCATION": BQ_LOCATION,
        "PHASE1_SCRAPER_URL": httpserver.url_for("/scrapers/"),
        "PHASE4_SERVICE_URL": httpserver.url_for("/phase4/"),
        "SELFHEAL_PHASE4_VIA_SERVICE": CACHE.name,
        "SLACK_WEBHOOK_URL": httpserver.url_for("/slack"),
        # One sweep, the sensor's first tick, finds the gap: nothing after it needs another,
        # and each costs a run, its step process and its BigQuery jobs (each one analysed).
        "SELFHEAL_SWEEP_INTERVAL_SECONDS": ONE_SWEEP,
        "SELFHEAL_SWEEP_PHASE2_DAYS": str(WINDOW),
        "SELFHEAL_SWEEP_PHASE4_DAYS": "0",
        "SELFHEAL_HEAL_INTERVAL_SECONDS": DAEMON_HEAL_SECONDS,
        "SELFHEAL_HEAL_BACKOFF_SECONDS": "5",
        "SELFHEAL_HEAL_GROUP_WAIT_SECONDS": "5",
    }
    return env, gap, after, full, platform, slack


@pytest.mark.long
def test_a_gap_is_healed_in_production_mode_and_a_terminated_run_cancels_its_job(
    bigquery, production, tmp_path
):
    env, gap, after, full, platform, slack = production
    setup = len(bigquery.order)
    with dagster_dev_running(env, tmp_path / "dagster_dev.log") as dev:

        def healed():
            with bigquery_warehouse("test") as wh:
                found = wh.history(day=gap)
            closed = [r for r in found if r.outcome is history.Outcome.HEALED]
            return closed or None

        [record] = wait_for("the gap healed", healed, timeout=bound(300))

        def closed():
            with bigquery_warehouse("test") as wh:
                found = wh.history(correlation_id=record.correlation_id)
            return [r for r in found if r.outcome is history.Outcome.CLOSED]

        # The refresh is a run of 10 steps (five tables and their checks), a process each:
        # on 2 cores under the whole suite, as 20 steps, it took 240 s to over 285 s.
        wait_for("the incident closed (its refresh done)", closed, timeout=bound(600))
        jobs = bigquery.received[setup:]
        with bigquery_warehouse("test") as wh:
            assert wh.partition_stats(BOX, gap, gap)[gap].rows == full  # the exact rows

        # Every job the heal sent is listed under its correlation ID; none was refused.
        heal_jobs = [j for j in jobs if j.labels.get("correlation_id") == record.correlation_id]
        by_component = Counter(j.labels["component"] for j in heal_jobs)
        print(f"{len(jobs)} jobs while dagster dev ran, {len(bigquery.refused)} refused")
        print(f"the heal's jobs: {dict(by_component)}")
        for job in heal_jobs:
            load = job.config.get("load", {}).get("destinationTable", {}).get("tableId", "")
            print(f"  {job.labels.get('asset', '-'):28} {job.sql[:70] or 'load ' + load}")
        assert bigquery.refused == [], [j.error for j in bigquery.refused]
        assert by_component["asset"] >= 5 and by_component["check"] >= 1
        assert all(j.labels.get("dagster_run_id") for j in heal_jobs)
        # The services: the scraper reloaded the gap, the Phase 4 service refreshed the
        # dates after it; each call carried an ID token, an idempotency key and the heal.
        scraped = [r for r in platform.calls if r.path.startswith("/scrapers/")]
        assert [(r.path, r.args["game_date"]) for r in scraped] == [
            (f"/scrapers/{BOX.feed}", gap.isoformat())
        ]
        refreshed = sorted(
            r.args["game_date"] for r in platform.calls if r.path.startswith("/phase4/")
        )
        assert refreshed == [d.isoformat() for d in after]
        for call in platform.calls:
            assert call.headers["Authorization"].startswith("Bearer ey")
            assert call.headers["X-Correlation-ID"] == record.correlation_id
            assert call.headers["Idempotency-Key"]
        assert {c["aud"] for c in bigquery.id_tokens} <= {
            env["PHASE1_SCRAPER_URL"],
            env["PHASE4_SERVICE_URL"],
        }

        # Alerts: the incident opens and closes, one message each (a webhook has no thread).
        wait_for("the incident's closing message", lambda: len(slack) >= 2, timeout=bound(120))

        # A person's run, terminated from the UI while its BigQuery job runs: the job is
        # cancelled, and writes nothing.
        bigquery.gate(rf"^MERGE `{BQ_PROJECT}.{COMPOSITE.dataset}.{COMPOSITE.name}`")
        run_id = launch_run(dev.port, [COMPOSITE], after[0])

        def held():
            return [
                j
                for j in bigquery.received
                if j.labels.get("dagster_run_id") == run_id and j.sql.startswith("MERGE")
            ]

        [merge] = wait_for("the run's MERGE to reach BigQuery", held, timeout=bound(120))
        before = bigquery.rows(COMPOSITE.dataset, COMPOSITE.name, "analysis_date = ?", [after[0]])
        said = graphql(dev.port, TERMINATE, {"runId": run_id})["terminateRun"]
        assert said["__typename"] == "TerminateRunSuccess", said
        wait_for("the job cancelled", lambda: merge.id in bigquery.cancels, timeout=bound(120))
        # By the step itself (its interrupt); the run-status sensor would otherwise.
        assert bigquery.cancelled_by[merge.id] == "its own client"
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            wait_for(
                "the run to end canceled",
                lambda: instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELED,
                timeout=bound(120),
            )
        merge.done.wait(bound(30))
        assert merge.error and merge.error["reason"] == "stopped"
        after_rows = bigquery.rows(
            COMPOSITE.dataset, COMPOSITE.name, "analysis_date = ?", [after[0]]
        )
        assert after_rows == before
    said = [json.dumps(m) for m in slack]
    assert len(said) == 2, said
    assert all(record.correlation_id in s for s in said)
