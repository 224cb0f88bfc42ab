"""Checks that see a doubled load: row counts bounded in both directions, and the row key
checked in every partition; a doubled or tripled partition is healed back to its exact rows,
and the Phase 4 dates that read it are refreshed. A whole simulated season raises no false
alarm."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from selfheal_dagster import runs
from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_SEED
from selfheal_dagster.adapters.warehouse import read_window
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.core.calendar import all_star_sunday, opening_night, season_end
from selfheal_dagster.core.checks import Status, evaluate, expectation, window_start
from selfheal_dagster.core.dates import date_range, eastern, now_utc
from selfheal_dagster.core.history import Outcome
from selfheal_dagster.core.incidents import how
from selfheal_dagster.tables import BY_NAME, LOADED_AT, TABLES, execution_order, in_phase
from selfheal_dagster_tests.support import GAME_DAY, calendar, fingerprint, selfheal_here

BOX = BY_NAME["bdl_player_boxscores"]
ODDS = BY_NAME["odds_api_game_lines"]
FEATURES = BY_NAME["ml_feature_store_v2"]
SEASON = 2025


@pytest.fixture(scope="session")
def season(tmp_path_factory):
    """The 2025-26 season of the simulated league, every table, in DuckDB (Phase 4 computed
    for every date as one ranged statement per processor)."""
    league = League(DEFAULT_SEED)
    days = date_range(opening_night(SEASON) - timedelta(days=3), season_end(SEASON))
    wh = DuckDBWarehouse(tmp_path_factory.mktemp("season") / "warehouse.duckdb")
    for table in in_phase(2):
        wh.replace_partitions(table, {d: league.feed(table.feed, d) for d in days})
    for table in execution_order(in_phase(4)):
        wh.run_processor(table, days)
    return wh, days, league


def test_a_whole_season_raises_no_false_alarm(season):
    """Overtime games, the season's first days, the All-Star break, days with one game and
    days with fifteen: every table, every date, no spike and no key failure (nor any other
    failure: the loads are whole)."""
    wh, days, league = season
    games = {d: len(league.games_on(d)) for d in days}
    assert sum(1 for n in games.values() if n) >= 160
    assert all_star_sunday(SEASON) in days and not games[all_star_sunday(SEASON)]
    assert min(n for n in games.values() if n) == 2 and max(games.values()) == 11
    window = read_window(wh, window_start(days), days[-1])
    found = evaluate([(t, d) for t in TABLES for d in days], window, now_utc(), calendar(league))
    counted = Counter((o.check, o.status) for o in found)
    print(dict(counted))
    assert counted[("row_count", Status.SPIKE)] == 0
    assert counted[("key", Status.DUPLICATE)] == counted[("key", Status.NULL_KEY)] == 0
    assert [o for o in found if not o.passed] == []
    assert counted[("key", Status.OK)] == len(TABLES) * len(days)


def per_game_rows(wh, table, days) -> dict:
    """Rows of each game of the season, per date: (date, game) -> rows (Phase 4 tables
    without a game column by the team's game that day)."""
    sched = wh.ref(BY_NAME["nbac_schedule"])
    pc = table.partition_column
    if "game_id" in table.column_names:
        sql = f"SELECT {pc} AS d, game_id, COUNT(*) AS n FROM {wh.ref(table)} GROUP BY ALL"
    else:
        sql = (
            f"SELECT t.{pc} AS d, s.game_id, COUNT(*) AS n FROM {wh.ref(table)} AS t "
            f"JOIN {sched} AS s ON s.game_date = t.{pc} "
            "AND t.team_abbr IN (s.home_team, s.away_team) GROUP BY ALL"
        )
    return {(r["d"], r["game_id"]): r["n"] for r in wh.query(sql)}


def test_one_game_days_and_fifteen_game_days_stay_under_the_ceiling(season):
    """The simulated season has 2 to 11 games a day. Every single game of it, alone on a
    day, would stay under that day's ceiling (its learned bound from the game days before),
    and so would the fifteen largest games of the season played on one day."""
    wh, days, league = season
    window = read_window(wh, window_start(days), days[-1])
    cal = calendar(league)
    for table in TABLES:
        games = per_game_rows(wh, table, days)
        worst_day = 0.0
        for day in days:
            exp = expectation(table, day, window, cal)
            if not exp.games or exp.learned_ceiling is None:
                continue
            per_game_ceiling = min(exp.ceiling, exp.learned_ceiling) / exp.games
            largest = max(n for (d, _), n in games.items() if d == day)
            assert largest <= per_game_ceiling, (table.name, day, largest, per_game_ceiling)
            worst_day = max(worst_day, largest / per_game_ceiling)
        fifteen = sum(sorted(games.values())[-15:])
        assert fifteen <= 15 * table.rows.max_per_game, table.name
        print(f"{table.name}: largest game at {worst_day:.0%} of a one-game day's ceiling")


@pytest.mark.parametrize(("table", "copies"), [(BOX, 2), (BOX, 3), (FEATURES, 2), (ODDS, 3)])
def test_a_doubled_or_tripled_partition_fails_naming_its_rows_and_keys(
    history, league, table, copies
):
    day = GAME_DAY if table.phase == 2 else GAME_DAY + timedelta(days=1)
    if table.phase == 4:
        for t in execution_order(in_phase(4)):
            history.run_processor(t, [day])
    before, after = history.multiply(table, day, copies)
    assert after == copies * before > 0
    window = read_window(history, window_start([day]), day)
    spike, _, key = evaluate([(table, day)], window, now_utc(), calendar(league))
    assert key.status is Status.DUPLICATE
    assert key.metadata["duplicated_keys"] == before and key.metadata["rows"] == after
    assert key.metadata["example"] and f"{before} keys" in key.reason
    if table is ODDS and copies == 3 or table is not ODDS:
        assert spike.status is Status.SPIKE, spike.reason
        assert spike.metadata["rows"] == after and spike.metadata["expected_max"] < after
        assert "more than they can produce" in spike.reason and spike.metadata["ceiling"]


def test_a_null_key_fails_the_key_check(history, league):
    ref = history.ref(BOX)
    history.query(
        f"UPDATE {ref} SET player_id = NULL WHERE rowid IN "
        f"(SELECT rowid FROM {ref} WHERE game_date = $d ORDER BY rowid LIMIT 2)",
        {"d": GAME_DAY},
    )
    window = read_window(history, GAME_DAY, GAME_DAY, [BOX])
    [key] = evaluate([(BOX, GAME_DAY)], window, now_utc(), calendar(league), checks=["key"])
    assert key.status is Status.NULL_KEY and key.metadata["null_keys"] == 2
    assert "2 of 185 rows have a NULL in (game_id/player_id)" in key.reason


class Loop(runs.LocalLoop):
    """The in-process daemon loop, sweeping as of the day after GAME_DAY, 13:00 ET: Phase 2
    for the three dates before it, Phase 4 for it."""

    NOW = eastern(GAME_DAY + timedelta(days=1), 13)

    def sweep(self):
        return super().sweep(now=self.NOW.isoformat(), phase4_days=1, reassert_minutes=0)


def test_doubled_and_tripled_loads_are_healed_to_their_exact_rows(history, instance, defs):
    """Box scores of GAME_DAY doubled, odds of the day before tripled, the feature store of
    the day after doubled: the sweep finds each, the heal sensor reloads or recomputes it,
    and the Phase 4 date that reads them is refreshed; every partition ends with exactly the
    rows it had before the faults."""
    after = GAME_DAY + timedelta(days=1)
    [done] = runs.materialize([after], in_phase(4), dagster_instance=instance, defs=defs)
    assert done.success
    faults = [(BOX, GAME_DAY, 2), (ODDS, GAME_DAY - timedelta(days=1), 3), (FEATURES, after, 2)]
    watched = [*faults, *((t, after, 1) for t in in_phase(4))]
    truth = {(t.name, d): fingerprint(history, t, d) for t, d, _ in watched}
    for table, day, copies in faults:
        history.multiply(table, day, copies)
    loop = Loop(defs, instance)
    loop.start()
    swept = loop.sweep()
    assert swept["failing_count"] >= 3, swept["failing"]
    healed = loop.heal_until_quiet()
    assert healed and all(h.outcome == "healed" for h in healed), healed
    for table, day, _ in watched:
        assert fingerprint(history, table, day) == truth[(table.name, day)], (table.name, day)
    box_at = history.partition_stats(BOX, GAME_DAY, GAME_DAY)[GAME_DAY].loaded_at
    for table in in_phase(4):  # recomputed after the box scores they read were reloaded
        assert history.partition_stats(table, after, after)[after].loaded_at > box_at
    records = history.history(day=GAME_DAY)
    said = " ".join(r.cause or "" for r in records)
    assert "more than they can produce" in said or "appear more than once" in said
    # What the alerts say the incident broke: "doubled", with the rows, not "missing".
    assert any(how(part).startswith("doubled:") for part in said.split("; ")), said
    assert all(r.outcome is not Outcome.GAVE_UP for r in records)
    assert loop.sweep()["failing_count"] == 0


def test_the_key_is_counted_in_bigquery_too(tmp_path, zetasql):
    """The same stats statement through the strict double (pruned, analysed by ZetaSQL)."""
    from selfheal_dagster_tests.support import bigquery_double, bigquery_warehouse

    league = League(DEFAULT_SEED)
    with bigquery_double(tmp_path, zetasql) as double, bigquery_warehouse() as wh:
        wh.ensure_tables()
        wh.replace_partition(BOX, GAME_DAY, league.feed(BOX.feed, GAME_DAY))
        before, after = wh.multiply(BOX, GAME_DAY, 2)
        found = wh.partition_stats(BOX, GAME_DAY, GAME_DAY)[GAME_DAY]
    assert (found.rows, found.keys, found.duplicated, found.null_keys) == (after, before, before, 0)
    assert found.example and double.refused == []
    assert LOADED_AT in {f.name for f in double.tables[(BOX.dataset, BOX.name)].fields}


def test_a_person_rehearses_a_doubled_load_and_check_names_it(history, capsys):
    selfheal = selfheal_here
    day = GAME_DAY.isoformat()
    assert selfheal("gap", "--table", BOX.name, "--date", day, "--copies", "2") == 0
    assert "loaded 2 times over: 185 → 370 rows" in capsys.readouterr().out
    assert selfheal("check", "--date", day, "--phase", "2", "--json") == 1
    said = capsys.readouterr().out
    assert '"bdl_player_boxscores": 370' in said and "appear more than once" in said
    assert (
        selfheal("gap", "--table", BOX.name, "--date", day, "--copies", "2", "--keep", "0.5") == 2
    )
