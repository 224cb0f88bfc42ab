"""The code location loads, validates and has the shape of SPEC section 2."""

import subprocess
import sys

import dagster as dg

from selfheal_dagster.tables import PHASE_OWNERS, TABLES, in_phase


def test_full_definitions_load_and_validate(defs):
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("daily_job") is not None


def test_asset_keys_groups_and_kinds_follow_the_registry(defs):
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {t.key for t in TABLES} | {"selfheal/heal_history"}
    metrics = graph.get(dg.AssetKey(["selfheal", "heal_history"]))
    assert metrics.group_name == "orchestration"  # lineage: every table feeds heal records
    assert {p.to_user_string() for p in metrics.parent_keys} == {t.key for t in TABLES}
    for t in TABLES:
        node = graph.get(dg.AssetKey(t.key_path))
        assert node.group_name == f"phase{t.phase}"
        assert node.owners == [PHASE_OWNERS[t.phase]]
        schema = node.metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == t.column_names
        assert all(c.description for c in schema.columns), t.name
        assert "duckdb" in node.kinds
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
        assert node.partitions_def.timezone == "America/New_York"
        assert {p.to_user_string() for p in node.parent_keys} == {
            "/".join([next(x for x in TABLES if x.name == u.table).dataset, u.table])
            for u in t.upstream
        }


def test_each_phase4_asset_says_what_it_reads_over_which_dates(defs):
    graph = defs.resolve_asset_graph()
    cache = graph.get(dg.AssetKey(["nba_predictions", "player_daily_cache"]))
    reads = cache.metadata["reads"].value
    assert "- nba_raw/bdl_player_boxscores, D−30…D−1" in reads
    assert "- nba_raw/nbac_schedule, D" in reads.splitlines()
    assert "nba_raw/bdl_player_boxscores, D−30…D−1" in cache.description
    team = graph.get(dg.AssetKey(["nba_precompute", "team_defense_zone_analysis"]))
    assert "D−15…D−1" in team.metadata["reads"].value


def test_lookback_reads_are_declared_as_time_window_mappings(defs):
    cache = defs.resolve_assets_def(dg.AssetKey(["nba_predictions", "player_daily_cache"]))
    mapping = cache.get_partition_mapping(dg.AssetKey(["nba_raw", "bdl_player_boxscores"]))
    assert isinstance(mapping, dg.TimeWindowPartitionMapping)
    assert (mapping.start_offset, mapping.end_offset) == (-30, -1)
    same_day = cache.get_partition_mapping(dg.AssetKey(["nba_raw", "nbac_schedule"]))
    assert not isinstance(same_day, dg.TimeWindowPartitionMapping) or same_day.start_offset == 0


def test_box_scores_of_x_feed_phase4_of_the_days_after_x(defs):
    graph = defs.resolve_asset_graph()
    box = dg.AssetKey(["nba_raw", "bdl_player_boxscores"])
    cache = dg.AssetKey(["nba_predictions", "player_daily_cache"])
    child = graph.get_child_partition_keys_of_parent("2026-01-20", box, cache)
    assert "2026-01-20" not in child
    assert "2026-01-21" in child and "2026-02-19" in child and "2026-02-20" not in child


def test_loading_the_code_location_has_no_side_effects_and_no_cloud_imports(tmp_path):
    code = (
        "import sys\n"
        "from selfheal_dagster.definitions import defs\n"
        "defs()\n"
        "heavy = ('google.cloud.bigquery', 'dagster_gcp', 'slack_sdk')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SELFHEAL_")}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no warehouse, no data dir


def test_phase_groups_split_four_and_five(defs):
    graph = defs.resolve_asset_graph()
    groups = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, set()).add(key.to_user_string())
    assert groups == {
        "phase2": {t.key for t in in_phase(2)},
        "phase4": {t.key for t in in_phase(4)},
        "orchestration": {"selfheal/heal_history"},
    }
