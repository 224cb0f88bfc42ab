"""The Dagster UI tells the story: ``dagster dev`` on a free loopback port over a small demo
instance, read through its GraphQL API and in a real browser (Debian's chromium, driven by
playwright). Screenshots land in ``artifacts/ui/`` (gitignored)."""

import os
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from selfheal_dagster.core import names
from selfheal_dagster.core.checks import CHECKS
from selfheal_dagster.instance.heal_loop import OUTCOME_TAG
from selfheal_dagster.tables import BY_NAME, TABLES
from selfheal_dagster_tests.daemon import ROOT, dagster_dev_running, graphql, wait_for
from selfheal_dagster_tests.support import bound

ARTIFACTS = ROOT / "artifacts" / "ui"
LOCATION = {"repositoryLocationName": "selfheal_dagster", "repositoryName": "__repository__"}
BOX = BY_NAME["bdl_player_boxscores"]


JOB_RUNS = """
query JobRuns($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { runs(limit: 1000) { runId } }
  }
}
"""
SENSOR_RUNS = """
query SensorRuns($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { runs(limit: 1000) { runId } } }
  }
}
"""
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def job_runs(port: int, job: str) -> set[str]:
    found = graphql(port, JOB_RUNS, {"selector": {**LOCATION, "pipelineName": job}})
    assert found["pipelineOrError"]["__typename"] == "Pipeline", found
    return {r["runId"] for r in found["pipelineOrError"]["runs"]}


@dataclass
class DemoUI:
    port: int
    home: Path
    demo_runs: dict[str, str]  # run ID -> job name, every run `selfheal demo` made
    heal_run: str  # the demo's box-score heal
    gap_day: str  # the date whose box scores the demo deleted


@pytest.fixture(scope="module")
def demo_ui(tmp_path_factory, demo) -> DemoUI:
    workdir = tmp_path_factory.mktemp("ui")
    out = demo(workdir)  # the demo over two days, made once for the run (conftest.py)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))},
        "SELFHEAL_DUCKDB_PATH": str(workdir / "warehouse.duckdb"),
        "DAGSTER_HOME": str(workdir / "dagster_home"),
    }
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        made = {r.run_id: r.job_name for r in instance.get_runs()}
        [heal] = instance.get_runs(
            dg.RunsFilter(job_name="heal_job", tags={names.FAILED: BOX.name})
        )
    # The instance has shown its "join the community" dialog already (Dagster keeps that in
    # $DAGSTER_HOME/.nux/nux.yaml): otherwise it opens over the first page some time after it
    # loads, and its backdrop takes the clicks meant for the page.
    nux = Path(env["DAGSTER_HOME"]) / ".nux"
    nux.mkdir(exist_ok=True)
    (nux / "nux.yaml").write_text("seen: 1\n")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with dagster_dev_running(env, ARTIFACTS / "dagster_dev.log") as dev:

        def loaded():  # the code location, not just the webserver
            found = graphql(
                dev.port, JOB_RUNS, {"selector": {**LOCATION, "pipelineName": "heal_job"}}
            )
            return found["pipelineOrError"]["__typename"] == "Pipeline"

        wait_for("the code location to load", loaded, bound(240))
        yield DemoUI(
            dev.port,
            Path(env["DAGSTER_HOME"]),
            made,
            heal.run_id,
            heal.tags["dagster/partition"],
        )


def test_every_run_the_demo_made_is_listed_under_its_job_in_the_location(demo_ui):
    jobs = sorted(set(demo_ui.demo_runs.values()))
    assert {"daily_job", "heal_job", "sweep_job", "heal_metrics_job"} <= set(jobs)
    listed = set().union(*(job_runs(demo_ui.port, job) for job in jobs))
    missing = {r: j for r, j in demo_ui.demo_runs.items() if r not in listed}
    assert not missing, missing
    # The heal runs the heal sensor requested are on the sensor's page too.
    found = graphql(
        demo_ui.port, SENSOR_RUNS, {"selector": {**LOCATION, "sensorName": "heal_sensor"}}
    )
    on_sensor = {r["runId"] for r in found["sensorOrError"]["sensorState"]["runs"]}
    heals = {r for r, j in demo_ui.demo_runs.items() if j == "heal_job"}
    assert heals and heals <= on_sensor


def test_the_demo_heal_runs_carry_their_outcome(demo_ui):
    with dg.DagsterInstance.from_config(str(demo_ui.home)) as instance:
        heals = [r for r in instance.get_runs(dg.RunsFilter(run_ids=list(demo_ui.demo_runs)))]
        heals = [r for r in heals if r.job_name == "heal_job"]
    assert heals and all(r.tags[OUTCOME_TAG] == "healed" for r in heals)


def test_launching_sweep_job_for_one_partition_records_exactly_that_date(demo_ui):
    """As the UI's Partitions tab does: launchRun of sweep_job with the partition tag."""
    params = {
        "selector": {**LOCATION, "jobName": "sweep_job"},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": demo_ui.gap_day}]},
        "mode": "default",
    }
    launched = graphql(demo_ui.port, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    with dg.DagsterInstance.from_config(str(demo_ui.home)) as instance:

        def ended():
            run = instance.get_run_by_id(run_id)
            return run.is_finished and run

        run = wait_for("the sweep run to end", ended, bound(300), interval=1)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        results = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = [e.dagster_event.asset_check_evaluation_data for e in results]
    assert {e.partition for e in evaluations} == {demo_ui.gap_day}
    assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} == {
        (t.key, name) for t in TABLES for name in CHECKS
    }
    assert all(e.passed for e in evaluations if e.check_name == "row_count")


def _chromium() -> str | None:
    return (
        os.environ.get("SELFHEAL_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


@pytest.fixture(scope="module")
def page(demo_ui):
    path = _chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(bound(60) * 1000)
        try:
            yield page
        finally:
            browser.close()


def visit(page, demo_ui, path: str) -> None:
    page.goto(f"http://127.0.0.1:{demo_ui.port}{path}", wait_until="networkidle")


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


def test_the_asset_graph_shows_every_table_and_the_heal_history(page, demo_ui):
    groups = ",".join(f"global@global:{g}" for g in ("phase2", "phase4", "orchestration"))
    visit(page, demo_ui, f"/asset-groups?expanded={urllib.parse.quote(groups)}")
    nodes = page.locator("svg foreignObject [class*=assetName]")
    nodes.first.wait_for()
    labels = nodes.all_inner_texts()
    shot(page, "1_asset_graph")
    wanted = [t.name for t in TABLES] + ["heal_history"]
    assert len(labels) == len(wanted), labels
    # Zoomed out, the graph shortens long names in the middle: "bdl_pla…_boxscores".
    assert all(any(drawn(label, name) for label in labels) for name in wanted), labels


def drawn(label: str, name: str) -> bool:
    head, _, tail = label.partition("…")
    return label == name or (bool(tail) and name.startswith(head) and name.endswith(tail))


def test_the_row_count_check_shows_the_gap_date_failed_then_passed(page, demo_ui):
    visit(page, demo_ui, f"/assets/{BOX.key}?view=checks&checkDetail=row_count")
    page.get_by_text("Execution history", exact=True).click()
    rows = page.locator("tr").filter(has_text=demo_ui.gap_day)
    rows.first.wait_for()
    statuses = [
        "Passed" if "Passed" in text else "Failed" if "Failed" in text else "?"
        for text in rows.all_inner_texts()
    ]
    shot(page, "2_row_count_history")
    # Newest first: the heal's pass, above the sweep's failure on the emptied date.
    assert statuses[0] == "Passed" and "Failed" in statuses, statuses
    assert statuses.index("Failed") > 0
    page.get_by_text("Partitions", exact=True).last.click()
    page.get_by_text("Passed (", exact=False).first.wait_for()
    shot(page, "3_row_count_partitions")


def test_a_heal_run_page_shows_its_selfheal_tags_and_outcome(page, demo_ui):
    visit(page, demo_ui, f"/runs/{demo_ui.heal_run}")
    page.get_by_text("View tags and config").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("selfheal/outcome: healed").wait_for()
    text = dialog.inner_text()
    shot(page, "4_heal_run_tags")
    assert f"selfheal/target_date: {demo_ui.gap_day}" in text
    assert "selfheal/correlation_id:" in text and "selfheal/attempt: 1" in text
    assert "selfheal/outcome_reason:" in text


def test_sweep_job_partitions_tab_offers_a_launch(page, demo_ui):
    visit(page, demo_ui, "/locations/selfheal_dagster/jobs/sweep_job/partitions")
    page.get_by_text("Launch backfill", exact=False).first.wait_for()
    assert page.get_by_text("Total partitions").count() == 1
    shot(page, "5_sweep_job_partitions")
