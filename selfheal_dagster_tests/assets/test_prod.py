"""Production wiring, without a cloud account: settings, loading, the instance config."""

import os
import re
import subprocess
import sys

import pytest

from selfheal_dagster.adapters.settings import Settings, SettingsError
from selfheal_dagster_tests.support import ROOT, bound

PROD = {
    "SELFHEAL_ENV": "prod",
    "SELFHEAL_BQ_PROJECT": "nba-props-prod",
    "SELFHEAL_BQ_LOCATION": "US",
    "PHASE1_SCRAPER_URL": "https://scrapers.example.run.app",
    "PHASE4_SERVICE_URL": "https://phase4.example.run.app",
    "SELFHEAL_PHASE4_VIA_SERVICE": "player_daily_cache,ml_feature_store_v2",
}


def run(args, env, cwd=ROOT):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "PHASE"))}
    return subprocess.run(
        args, cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=bound(300)
    )


@pytest.mark.parametrize(
    ("missing", "line"),
    [
        ("SELFHEAL_BQ_PROJECT", "SELFHEAL_BQ_PROJECT is not set: required when SELFHEAL_ENV=prod"),
        ("PHASE1_SCRAPER_URL", "PHASE1_SCRAPER_URL is not set: required when SELFHEAL_ENV=prod"),
    ],
)
def test_a_missing_production_setting_fails_loading_with_one_line(missing, line, tmp_path):
    env = {k: v for k, v in PROD.items() if k != missing}
    out = run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "selfheal_dagster.definitions",
        ],
        env,
    )
    assert out.returncode != 0
    assert line in out.stdout + out.stderr
    cli = run([sys.executable, "-m", "selfheal_dagster.cli", "history"], env, cwd=tmp_path)
    assert cli.returncode == 2 and cli.stderr.strip().splitlines() == [f"error: {line}"]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"SELFHEAL_BQ_PROJECT": "My Project"}, "not a Google Cloud project id"),
        ({"PHASE1_SCRAPER_URL": "scrapers.internal"}, "PHASE1_SCRAPER_URL is not an http(s) URL"),
        ({"SELFHEAL_PHASE4_VIA_SERVICE": "player_cache"}, "unknown processors player_cache"),
        ({"PHASE4_SERVICE_URL": ""}, "PHASE4_SERVICE_URL is not set"),
        ({"SELFHEAL_SERVICE_AUTH": "basic"}, "SELFHEAL_SERVICE_AUTH='basic'"),
    ],
)
def test_bad_production_settings_are_named(changes, needle):
    with pytest.raises(SettingsError, match=re.escape(needle)):
        Settings.from_env({**PROD, **changes})


def test_production_loads_bigquery_the_services_and_multiprocess_without_network(tmp_path):
    code = (
        "import sys, dagster as dg\n"
        "from selfheal_dagster.definitions import defs\n"
        "d = defs(); dg.Definitions.validate_loadable(d)\n"
        "node = d.resolve_asset_graph().get(dg.AssetKey(['nba_raw', 'bdl_player_boxscores']))\n"
        "r = d.resources\n"
        "print(sorted(node.kinds), type(r['warehouse']).__name__, type(r['source']).__name__)\n"
        "heal = d.resolve_job_def('heal_job').executor_def\n"
        "config = heal.config_schema.resolve_config({}).value['config']\n"
        "print(heal.name, list(config['start_method']),"
        " d.resolve_job_def('sweep_job').executor_def.name)\n"
        "print(r['phase4'].via_service)\n"
        "print([m for m in ('google.cloud.bigquery', 'slack_sdk') if m in sys.modules])\n"
    )
    out = run([sys.executable, "-c", code], {**PROD, "DAGSTER_HOME": str(tmp_path)}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    kinds, executor, via, heavy = out.stdout.strip().splitlines()
    assert kinds == "['bigquery', 'python'] BigQueryWarehouseResource ScraperServiceResource"
    # A heal's steps fork from a server that imported the location once; a sweep is one op:
    # no second process.
    assert executor == "multiprocess ['forkserver'] in_process"
    assert via == "['player_daily_cache', 'ml_feature_store_v2']"
    assert heavy == "[]"  # clients load when a run uses them, not at load


def test_the_production_instance_config_is_valid_for_dagster():
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.run_coordinator import QueuedRunCoordinator

    config, custom_class = dagster_instance_config(str(ROOT / "deploy"), "dagster.yaml")
    assert custom_class is None
    assert set(config["storage"]) == {"postgres"}
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    checked = validate_config(QueuedRunCoordinator.config_type(), coordinator["config"])
    assert checked.success, checked.errors
    limits = {c["key"]: c for c in coordinator["config"]["tag_concurrency_limits"]}
    assert limits["selfheal/target_date"]["limit"] == 1
    assert limits["selfheal/target_date"]["value"] == {"applyLimitPerUniqueValue": True}
    assert 1 <= coordinator["config"]["max_concurrent_runs"] <= 16


def test_the_production_workspace_points_at_a_code_server():
    import yaml

    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
    [location] = workspace["load_from"]
    assert location["grpc_server"]["location_name"] == "selfheal_dagster"
    assert location["grpc_server"]["port"] == 4000
