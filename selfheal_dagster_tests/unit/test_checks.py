"""Row-count and freshness expectations against a real DuckDB warehouse."""

from datetime import timedelta

import pytest

from selfheal_dagster.adapters.warehouse import read_window
from selfheal_dagster.core.checks import (
    Status,
    completeness,
    evaluate,
    freshness,
    row_count,
    window_start,
)
from selfheal_dagster.core.dates import eastern
from selfheal_dagster.tables import BY_NAME, SCHEDULE, TABLES, execution_order, in_phase
from selfheal_dagster_tests.support import ALL_STAR_SUNDAY, GAME_DAY, calendar, set_loaded_at

BOX = BY_NAME["bdl_player_boxscores"]
ODDS = BY_NAME["odds_api_game_lines"]
CACHE = BY_NAME["player_daily_cache"]
AFTER_DEADLINE = eastern(GAME_DAY + timedelta(days=3), 12)


def window(wh, day=GAME_DAY, start=None):
    return read_window(wh, start or window_start([day]), day)


def on_time(wh, tables, day=GAME_DAY):
    for t in tables:
        set_loaded_at(wh, t, day, eastern(day + timedelta(days=t.deadline.days_after), 6))


def test_a_no_game_date_with_zero_rows_passes(history, league):
    assert league.games_on(ALL_STAR_SUNDAY) == []
    w = window(history, ALL_STAR_SUNDAY)
    now = eastern(ALL_STAR_SUNDAY + timedelta(days=5), 12)
    for table in TABLES:
        for cal in (calendar(league), None):
            for check in (row_count, freshness):
                out = check(table, ALL_STAR_SUNDAY, w, now, cal)
                assert out.status is Status.NO_GAMES and out.passed, (table.name, check)


def test_a_game_day_with_all_rows_loaded_on_time_passes(history, league):
    on_time(history, in_phase(2))
    now = eastern(GAME_DAY + timedelta(days=1), 11)
    w = window(history)
    for table in in_phase(2):
        rc = row_count(table, GAME_DAY, w, now, calendar(league))
        fr = freshness(table, GAME_DAY, w, now, calendar(league))
        assert rc.status is Status.OK and rc.passed, rc.reason
        assert fr.status is Status.OK and fr.passed, fr.reason
        assert rc.metadata["games"] == len(league.games_on(GAME_DAY))
        assert rc.metadata["rows"] >= rc.metadata["expected_min"] > 0


def test_a_deleted_partition_fails_both_checks_with_actionable_metadata(history, league):
    history.punch_gap(BOX, GAME_DAY)
    w = window(history)
    rc = row_count(BOX, GAME_DAY, w, AFTER_DEADLINE, calendar(league))
    fr = freshness(BOX, GAME_DAY, w, AFTER_DEADLINE, calendar(league))
    assert rc.status is Status.MISSING and not rc.passed and rc.heals
    assert rc.metadata["rows"] == 0 and rc.metadata["expected_min"] >= 16 * rc.metadata["games"]
    assert fr.status is Status.MISSING and fr.heals
    assert fr.metadata["deadline"] == eastern(GAME_DAY + timedelta(days=1), 10)
    assert not fr.passed


def test_a_60_percent_delivery_fails_once_history_exists_and_a_normal_day_does_not(history, league):
    history.punch_gap(ODDS, GAME_DAY, keep=0.6)
    cal = calendar(league)
    # With 30 days of history the learned volume bound catches it...
    w = window(history)
    short = row_count(ODDS, GAME_DAY, w, AFTER_DEADLINE, cal)
    assert short.status is Status.SHORT and short.heals
    assert short.metadata["history_game_days"] >= 7
    assert short.metadata["learned_bound"] > short.metadata["rows"] >= short.metadata["floor"]
    normal = row_count(ODDS, GAME_DAY - timedelta(days=1), w, AFTER_DEADLINE, cal)
    assert normal.status is Status.OK
    # ...while with only three earlier days the per-game floor alone lets it through.
    young = row_count(
        ODDS, GAME_DAY, window(history, start=GAME_DAY - timedelta(days=3)), AFTER_DEADLINE, cal
    )
    assert young.metadata["learned_bound"] is None and young.status is Status.OK


def test_every_normal_day_of_the_history_passes_the_learned_bound(history, league):
    w = window(history)
    for offset in range(0, 8):
        day = GAME_DAY - timedelta(days=offset)
        for table in in_phase(2):
            out = row_count(table, day, w, AFTER_DEADLINE, calendar(league))
            assert out.status in (Status.OK, Status.NO_GAMES), (table.name, day, out.reason)


def test_phase4_loaded_before_its_box_scores_were_reloaded_is_stale(history, league):
    for t in execution_order(in_phase(4)):
        history.run_processor(t, [GAME_DAY])
    w = window(history)
    assert freshness(CACHE, GAME_DAY, w, AFTER_DEADLINE, calendar(league)).status is Status.LATE
    reloaded = GAME_DAY - timedelta(days=4)
    history.replace_partition(BOX, reloaded, league.feed(BOX.name, reloaded))
    out = freshness(CACHE, GAME_DAY, window(history), AFTER_DEADLINE, calendar(league))
    assert out.status is Status.STALE and out.heals
    assert out.metadata["stale_upstream"] == "nba_raw/bdl_player_boxscores"
    assert out.metadata["stale_upstream_date"] == reloaded.isoformat()
    assert out.metadata["stale_upstream_loaded_at"] > out.metadata["loaded_at"]
    # Reloading a date the cache does not read (D itself) does not make it stale.
    for t in execution_order(in_phase(4)):
        history.run_processor(t, [GAME_DAY])
    history.replace_partition(BOX, GAME_DAY, league.feed(BOX.name, GAME_DAY))
    fresh = freshness(CACHE, GAME_DAY, window(history), AFTER_DEADLINE, calendar(league))
    assert fresh.status is not Status.STALE


def test_a_partition_not_yet_due_is_not_failed(history, league):
    history.punch_gap(BOX, GAME_DAY)
    before = eastern(GAME_DAY + timedelta(days=1), 9, 59)
    for check in (row_count, freshness):
        out = check(BOX, GAME_DAY, window(history), before, calendar(league))
        assert out.status is Status.NOT_DUE and out.passed and not out.heals
    # Phase 4 of D is due at noon of D itself.
    out = freshness(CACHE, GAME_DAY, window(history), eastern(GAME_DAY, 11), calendar(league))
    assert out.status is Status.NOT_DUE
    out = freshness(CACHE, GAME_DAY, window(history), eastern(GAME_DAY, 12, 1), calendar(league))
    assert out.status is Status.MISSING


def test_late_but_present_passes_with_the_delay_and_never_heals(history, league):
    set_loaded_at(history, SCHEDULE, GAME_DAY, eastern(GAME_DAY, 8))
    set_loaded_at(history, BOX, GAME_DAY, eastern(GAME_DAY + timedelta(days=1), 13, 30))
    out = freshness(BOX, GAME_DAY, window(history), AFTER_DEADLINE, calendar(league))
    assert out.status is Status.LATE and out.passed and not out.heals
    assert out.metadata["delay_minutes"] == 210
    # The schedule of D is pre-game: due at 10:00 of D itself.
    set_loaded_at(history, SCHEDULE, GAME_DAY, eastern(GAME_DAY, 11))
    out = freshness(SCHEDULE, GAME_DAY, window(history), AFTER_DEADLINE, calendar(league))
    assert out.status is Status.LATE and out.metadata["delay_minutes"] == 60


def test_without_a_calendar_the_schedule_is_vouched_for_by_the_other_raw_tables(history):
    history.punch_gap(SCHEDULE, GAME_DAY)
    out = row_count(SCHEDULE, GAME_DAY, window(history), AFTER_DEADLINE, None)
    assert out.status is Status.MISSING and out.metadata["games"] == 1
    for t in in_phase(2):
        history.punch_gap(t, GAME_DAY)
    out = row_count(SCHEDULE, GAME_DAY, window(history), AFTER_DEADLINE, None)
    assert out.status is Status.NO_GAMES


@pytest.mark.parametrize("gap", [None, "bdl_player_boxscores"])
def test_completeness_keeps_the_familiar_shape(history, league, gap):
    if gap:
        history.punch_gap(BY_NAME[gap], GAME_DAY)
    outcomes = evaluate(
        [(t, GAME_DAY) for t in in_phase(2)], window(history), AFTER_DEADLINE, calendar(league)
    )
    report = completeness(outcomes)
    assert set(report) == {"is_complete", "missing_processors", "record_counts"}
    assert report["is_complete"] is (gap is None)
    assert report["missing_processors"] == ([gap] if gap else [])
    assert report["record_counts"]["nbac_schedule"] == len(league.games_on(GAME_DAY))
    assert (report["record_counts"]["bdl_player_boxscores"] == 0) is bool(gap)


def test_a_windows_evaluation_asks_the_calendar_once_per_table_and_date(history, league):
    """Every date's volume bound looks back at up to 30 earlier dates; each (table, date)'s
    games are derived once per window, so a sweep costs dates, not dates x history."""
    asked: list = []

    def counting(day):
        asked.append(day)
        return len(league.games_on(day))

    days = [GAME_DAY - timedelta(days=k) for k in range(14)]
    targets = [(t, d) for t in TABLES for d in days]
    w = window(history, start=window_start(days))
    outcomes = evaluate(targets, w, AFTER_DEADLINE, counting)
    assert len(asked) <= len(TABLES) * len(w.days)
    first = len(asked)
    assert evaluate(targets, w, AFTER_DEADLINE, counting) == outcomes
    assert len(asked) == first  # all remembered by the window
    fresh = window(history, start=window_start(days))  # what a window without memory says
    assert evaluate(targets, fresh, AFTER_DEADLINE, calendar(league)) == outcomes
