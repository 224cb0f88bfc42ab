"""Phase 4 processors compute the right values from the right dates only."""

from collections import defaultdict
from datetime import timedelta
from statistics import mean

import pytest

from selfheal_dagster.tables import (
    BY_NAME,
    PLAYER_LOOKBACK,
    TABLES,
    TEAM_LOOKBACK,
    execution_order,
    in_phase,
)
from selfheal_dagster_tests.support import ALL_STAR_SUNDAY, GAME_DAY

PHASE4 = execution_order(in_phase(4))


def run_phase4(wh, day):
    return {t.name: wh.run_processor(t, [day]).rows for t in PHASE4}


def snapshot(wh, day):
    out = {}
    for t in PHASE4:
        out[t.name] = wh.query(
            f"SELECT * EXCLUDE (_loaded_at) FROM {wh.ref(t)} WHERE {t.partition_column} = $d "
            "ORDER BY ALL",
            {"d": day},
        )
    return out


def box_history(league, day, days):
    rows = []
    for offset in range(1, days + 1):
        rows += league.feed("bdl_player_boxscores", day - timedelta(days=offset))
    return rows


def test_every_phase4_table_has_rows_for_a_game_day(history, league):
    counts = run_phase4(history, GAME_DAY)
    games = len(league.games_on(GAME_DAY))
    assert counts["team_defense_zone_analysis"] == 2 * games
    for name in ("player_daily_cache", "player_composite_factors", "ml_feature_store_v2"):
        assert counts[name] == 30 * games  # every rostered player of both teams
    assert counts["player_shot_zone_analysis"] >= 16 * games


def test_rolling_averages_match_python_over_box_scores_before_the_date(history, league):
    run_phase4(history, GAME_DAY)
    by_player = defaultdict(list)
    for r in box_history(league, GAME_DAY, PLAYER_LOOKBACK):
        by_player[r["player_id"]].append(r)
    cache = history.query(
        'SELECT * FROM "nba_predictions"."player_daily_cache" WHERE game_date = $d', {"d": GAME_DAY}
    )
    checked = 0
    for row in cache:
        games = sorted(
            by_player.get(row["player_id"], []), key=lambda r: r["game_date"], reverse=True
        )
        if not games:
            assert row["points_avg_last_5"] is None
            continue
        assert row["points_avg_last_5"] == pytest.approx(mean(g["points"] for g in games[:5]))
        assert row["points_avg_last_10"] == pytest.approx(mean(g["points"] for g in games[:10]))
        assert row["minutes_avg_last_10"] == pytest.approx(mean(g["minutes"] for g in games[:10]))
        assert row["games_in_window"] == len(games)
        assert row["last_game_date"] == games[0]["game_date"]
        checked += 1
    assert checked > 100


def test_rest_days_and_back_to_backs_come_from_the_schedule(history, league):
    run_phase4(history, GAME_DAY)
    cache = history.query(
        "SELECT DISTINCT team_abbr, days_rest, is_back_to_back "
        'FROM "nba_predictions"."player_daily_cache" WHERE game_date = $d',
        {"d": GAME_DAY},
    )
    for row in cache:
        last = max(
            GAME_DAY - timedelta(days=o)
            for o in range(1, PLAYER_LOOKBACK + 1)
            if any(
                row["team_abbr"] in (g.home, g.away)
                for g in league.games_on(GAME_DAY - timedelta(days=o))
            )
        )
        assert row["days_rest"] == (GAME_DAY - last).days
        assert row["is_back_to_back"] == (row["days_rest"] == 1)


def test_opponent_zone_defense_matches_python(history, league):
    run_phase4(history, GAME_DAY)
    rows = history.query(
        'SELECT * FROM "nba_precompute"."team_defense_zone_analysis" WHERE analysis_date = $d',
        {"d": GAME_DAY},
    )
    box = box_history(league, GAME_DAY, TEAM_LOOKBACK)
    league_pct = sum(r["three_pm"] for r in box) / sum(r["three_pa"] for r in box)
    for row in rows:
        allowed = [r for r in box if r["opponent_abbr"] == row["team_abbr"]]
        pct = sum(r["three_pm"] for r in allowed) / sum(r["three_pa"] for r in allowed)
        assert row["opp_three_pct"] == pytest.approx(pct)
        assert row["three_defense_rating"] == pytest.approx(pct / league_pct)
        assert row["games_in_window"] == len({r["game_id"] for r in allowed})


def test_feature_store_carries_the_consensus_line_and_the_matchup(history, league):
    run_phase4(history, GAME_DAY)
    features = history.query(
        'SELECT * FROM "nba_predictions"."ml_feature_store_v2" WHERE game_date = $d',
        {"d": GAME_DAY},
    )
    odds = league.feed("odds_api_game_lines", GAME_DAY)
    for row in features[:40]:
        spreads = [
            o["point"]
            for o in odds
            if o["game_id"] == row["game_id"]
            and o["market"] == "spreads"
            and o["outcome"] == row["team_abbr"]
        ]
        assert row["team_spread"] == pytest.approx(mean(spreads))
        assert row["bookmakers"] == 5
        assert 0.8 <= row["composite_adjustment"] <= 1.2
        assert row["matchup_factor"] is not None


def test_a_no_game_date_gives_zero_phase4_rows(history, league):
    assert league.games_on(ALL_STAR_SUNDAY) == []
    assert all(n == 0 for n in run_phase4(history, ALL_STAR_SUNDAY).values())
    assert all(n > 0 for n in run_phase4(history, GAME_DAY).values())


def test_phase4_of_d_never_reads_phase2_of_d_or_later(history, league):
    run_phase4(history, GAME_DAY)
    before = snapshot(history, GAME_DAY)
    # Scramble box scores and gamebooks of D and D+1: Phase 4 of D must not notice.
    for name in ("bdl_player_boxscores", "nbac_gamebook_player_stats"):
        table = BY_NAME[name]
        for day in (GAME_DAY, GAME_DAY + timedelta(days=1)):
            rows = [
                dict(r, points=r["points"] * 10 + 3, minutes=48.0) for r in league.feed(name, day)
            ]
            history.replace_partition(table, day, rows)
    run_phase4(history, GAME_DAY)
    assert snapshot(history, GAME_DAY) == before
    # ...while the odds of D and the box scores of D-1 do change it (the test can fail).
    odds = BY_NAME["odds_api_game_lines"]
    history.replace_partition(
        odds,
        GAME_DAY,
        [dict(r, point=(r["point"] or 0) + 3) for r in league.feed(odds.name, GAME_DAY)],
    )
    run_phase4(history, GAME_DAY)
    assert snapshot(history, GAME_DAY)["ml_feature_store_v2"] != before["ml_feature_store_v2"]
    box = BY_NAME["bdl_player_boxscores"]
    for offset in range(1, 6):
        prev = GAME_DAY - timedelta(days=offset)
        history.replace_partition(
            box, prev, [dict(r, points=r["points"] + 7) for r in league.feed(box.name, prev)]
        )
    run_phase4(history, GAME_DAY)
    assert snapshot(history, GAME_DAY)["player_daily_cache"] != before["player_daily_cache"]


@pytest.mark.parametrize("table", PHASE4, ids=lambda t: t.name)
def test_every_window_functions_order_ends_in_the_key_of_what_it_reads(table):
    """Same input, same rows on every engine: a window's PARTITION BY and ORDER BY together
    name the whole key of the table it ranks, and its ORDER BY ends in a key column (ties
    between rows of one key cannot be broken arbitrarily, differently on DuckDB and
    BigQuery)."""
    import sqlglot
    from sqlglot import exp

    from selfheal_dagster.adapters.warehouse import processor_sql

    tree = sqlglot.parse_one(
        processor_sql(table).format_map({t.name: f'"{t.dataset}"."{t.name}"' for t in TABLES}),
        read="duckdb",
    )
    ctes = {c.alias: c.this for c in tree.find_all(exp.CTE)}
    windows = list(tree.find_all(exp.Window))
    for window in windows:
        select = window.find_ancestor(exp.Select)
        aliases = {}
        for source in select.find_all(exp.Table):
            name = source.name
            found = ctes.get(name)
            inner = found.find(exp.Table) if found is not None else source
            aliases[source.alias_or_name] = BY_NAME.get(inner.name) if inner else None
        ordered = [o.this for o in window.args["order"].expressions]
        named = {c.table: set() for c in window.find_all(exp.Column)}
        for column in window.find_all(exp.Column):
            named[column.table].add(column.name)
        last = ordered[-1]
        ranked = aliases[last.table]
        assert ranked is not None, window.sql()
        assert last.name in ranked.row_key, window.sql()
        assert set(ranked.row_key) <= named[last.table], window.sql()
    print(f"{table.name}: {len(windows)} window(s)")
