from collections import Counter
from datetime import date, timedelta

import pytest

from selfheal_dagster.adapters.league import (
    TEAMS,
    League,
    SourceOutage,
    parse_outages,
    season_games,
)
from selfheal_dagster.core.calendar import all_star_sunday, game_days, opening_night, season_end
from selfheal_dagster_tests.support import ALL_STAR_SUNDAY, GAME_DAY

FEEDS = [
    "nbac_schedule",
    "bdl_player_boxscores",
    "nbac_gamebook_player_stats",
    "odds_api_game_lines",
]


@pytest.mark.parametrize("feed", FEEDS)
def test_same_seed_and_date_give_identical_rows(feed):
    assert League(11).feed(feed, GAME_DAY) == League(11).feed(feed, GAME_DAY)


@pytest.mark.parametrize("feed", FEEDS[1:])
def test_a_different_seed_gives_different_rows(feed):
    assert League(11).feed(feed, GAME_DAY) != League(12).feed(feed, GAME_DAY)


def test_season_is_shaped_like_the_real_one():
    games = season_games(11, 2025)
    assert len(games) == 1230
    per_team = Counter()
    home = Counter()
    per_day = Counter(g.game_date for g in games)
    for g in games:
        per_team[g.home] += 1
        per_team[g.away] += 1
        home[g.home] += 1
    assert set(per_team.values()) == {82} and len(per_team) == 30
    assert set(home.values()) == {41}
    assert max(per_day.values()) <= 15
    assert 150 <= len(per_day) <= 175
    assert min(per_day) == opening_night(2025) == date(2025, 10, 21)
    assert max(per_day) == season_end(2025) == date(2026, 4, 12)
    # Nobody plays twice on one date.
    for day in per_day:
        teams = [t for g in games if g.game_date == day for t in (g.home, g.away)]
        assert len(teams) == len(set(teams))


def test_no_games_in_the_all_star_break_thanksgiving_or_off_season():
    league = League(11)
    assert all_star_sunday(2025) == ALL_STAR_SUNDAY
    for offset in range(-2, 4):
        assert league.games_on(ALL_STAR_SUNDAY + timedelta(days=offset)) == []
    assert league.games_on(date(2025, 11, 27)) == []  # Thanksgiving
    assert league.games_on(date(2025, 7, 15)) == []
    assert league.feed("bdl_player_boxscores", date(2025, 7, 15)) == []
    assert ALL_STAR_SUNDAY not in game_days(2025)


def test_feeds_are_believable_and_consistent(league):
    games = league.games_on(GAME_DAY)
    assert 1 <= len(games) <= 15
    box = league.feed("bdl_player_boxscores", GAME_DAY)
    book = league.feed("nbac_gamebook_player_stats", GAME_DAY)
    odds = league.feed("odds_api_game_lines", GAME_DAY)
    assert len(book) == 30 * len(games)  # every rostered player, playing or not
    assert {r["status"] for r in book} >= {"active", "dnp"}
    assert 16 * len(games) <= len(box) < len(book)
    for r in box:
        assert r["points"] == 2 * (r["paint_fgm"] + r["mid_fgm"]) + 3 * r["three_pm"] + r["ftm"]
        assert r["fga"] == r["paint_fga"] + r["mid_fga"] + r["three_pa"]
        assert r["minutes"] > 0
    # Box score minutes agree with the gamebook of the same player.
    minutes = {(r["game_id"], r["player_id"]): r["minutes"] for r in book}
    assert all(minutes[(r["game_id"], r["player_id"])] == r["minutes"] for r in box)
    team_points = Counter()
    for r in box:
        team_points[(r["game_id"], r["team_abbr"])] += r["points"]
    assert 80 < sum(team_points.values()) / len(team_points) < 140
    assert {r["market"] for r in odds} == {"h2h", "spreads", "totals"}
    assert len({r["bookmaker"] for r in odds}) >= 3
    assert {t.abbr for t in TEAMS} >= {r["team_abbr"] for r in box}


def test_outage_fails_every_fetch_and_short_delivery_cuts_rows():
    outage = League(11, outages=parse_outages("bdl_player_boxscores@2026-01-20"))
    for _ in range(2):
        with pytest.raises(SourceOutage, match="bdl_player_boxscores"):
            outage.feed("bdl_player_boxscores", GAME_DAY)
    assert outage.feed("nbac_schedule", GAME_DAY)  # other feeds unaffected
    full = League(11).feed("odds_api_game_lines", GAME_DAY)
    short = League(11, short={("odds_api_game_lines", GAME_DAY): 0.6})
    assert len(short.feed("odds_api_game_lines", GAME_DAY)) == int(len(full) * 0.6)


@pytest.mark.parametrize("bad", ["boxscores", "x@2026-13-01", "@2026-01-01"])
def test_bad_outage_lists_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_outages(bad)
