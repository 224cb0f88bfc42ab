import pytest

from selfheal_dagster.tables import (
    BY_NAME,
    TABLES,
    UnknownTableError,
    downstream_of,
    execution_order,
    in_phase,
    lookup,
)


def upstream(name: str) -> dict[str, int]:
    return {u.table: u.lookback_days for u in BY_NAME[name].upstream}


def test_registry_holds_exactly_the_nine_tables_of_the_spec():
    assert sorted(t.key for t in TABLES) == sorted(
        [
            "nba_raw/nbac_schedule",
            "nba_raw/bdl_player_boxscores",
            "nba_raw/nbac_gamebook_player_stats",
            "nba_raw/odds_api_game_lines",
            "nba_precompute/team_defense_zone_analysis",
            "nba_precompute/player_shot_zone_analysis",
            "nba_predictions/player_daily_cache",
            "nba_precompute/player_composite_factors",
            "nba_predictions/ml_feature_store_v2",
        ]
    )
    assert len({t.name for t in TABLES}) == 9
    assert [t.name for t in in_phase(2)] == [
        "nbac_schedule",
        "bdl_player_boxscores",
        "nbac_gamebook_player_stats",
        "odds_api_game_lines",
    ]


def test_dependency_chain_matches_the_spec():
    assert upstream("nbac_schedule") == {}
    for raw in ("bdl_player_boxscores", "nbac_gamebook_player_stats", "odds_api_game_lines"):
        assert upstream(raw) == {"nbac_schedule": 0}
    # Phase 4 reads box scores of earlier dates only (lookback), plus the schedule of D.
    for name in ("team_defense_zone_analysis", "player_shot_zone_analysis"):
        deps = upstream(name)
        assert deps["bdl_player_boxscores"] > 0 and deps["nbac_schedule"] == 0
    cache = upstream("player_daily_cache")
    assert cache["bdl_player_boxscores"] > 0 and cache["nbac_gamebook_player_stats"] > 0
    assert cache["nbac_schedule"] == 0
    assert upstream("player_composite_factors") == {
        "team_defense_zone_analysis": 0,
        "player_shot_zone_analysis": 0,
        "player_daily_cache": 0,
    }
    assert upstream("ml_feature_store_v2") == {
        "team_defense_zone_analysis": 0,
        "player_shot_zone_analysis": 0,
        "player_daily_cache": 0,
        "player_composite_factors": 0,
        "odds_api_game_lines": 0,
    }


def test_phase4_processor_order_is_fixed_by_dependencies():
    order = [t.name for t in execution_order(in_phase(4))]
    assert order == [
        "team_defense_zone_analysis",
        "player_shot_zone_analysis",
        "player_daily_cache",
        "player_composite_factors",
        "ml_feature_store_v2",
    ]
    assert [t.phase4_order for t in execution_order(in_phase(4))] == [1, 2, 3, 4, 5]
    # Every table comes after everything it reads.
    full = [t.name for t in execution_order()]
    for t in TABLES:
        for u in t.upstream:
            assert full.index(u.table) < full.index(t.name)


def test_deadlines_say_when_the_data_exists():
    pregame = {"nbac_schedule", "odds_api_game_lines"}
    for t in in_phase(2):
        due = (0, 10) if t.name in pregame else (1, 10)  # pre-game D 10:00, post-game D+1
        assert (t.deadline.days_after, t.deadline.hour) == due, t.name
        assert t.feed == t.name
    for t in in_phase(4):
        assert (t.deadline.days_after, t.deadline.hour) == (0, 12)


@pytest.mark.parametrize("name", ["bdl_player_boxscores", "nba_raw/bdl_player_boxscores"])
def test_lookup_accepts_short_names_and_asset_keys(name):
    assert lookup(name) is BY_NAME["bdl_player_boxscores"]


def test_lookup_rejects_unknown_table_naming_the_choices():
    with pytest.raises(UnknownTableError, match="unknown table 'box'.*bdl_player_boxscores"):
        lookup("box")


def test_downstream_of_box_scores_is_the_phase4_readers():
    assert {t.name for t in downstream_of("bdl_player_boxscores")} == {
        "team_defense_zone_analysis",
        "player_shot_zone_analysis",
        "player_daily_cache",
    }
