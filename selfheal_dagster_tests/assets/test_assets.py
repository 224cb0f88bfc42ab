"""Assets materialised through real Dagster runs against a real instance and DuckDB file."""

import logging
from datetime import timedelta

from selfheal_dagster import runs
from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_SEED
from selfheal_dagster.defs.checks import check_key
from selfheal_dagster.tables import BY_NAME, TABLES, in_phase
from selfheal_dagster_tests.support import GAME_DAY


def materializations(instance, table, day):
    import dagster as dg

    return instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(table.key_path), asset_partitions=[day.isoformat()]
        ),
        limit=10,
    ).records


def test_one_run_materialises_all_nine_tables_for_a_date(history, instance, defs, league):
    [outcome] = runs.materialize([GAME_DAY], TABLES, dagster_instance=instance, defs=defs)
    assert outcome.success, outcome.errors
    games = len(league.games_on(GAME_DAY))
    for table in TABLES:
        [record] = materializations(instance, table, GAME_DAY)
        meta = record.asset_materialization.metadata
        rows = history.partition_stats(table, GAME_DAY, GAME_DAY)[GAME_DAY].rows
        assert meta["dagster/row_count"].value == rows > 0
        assert meta["games"].value == games
        assert "loaded_at" in meta
    run = instance.get_run_by_id(outcome.run_id)
    assert run.tags["dagster/partition"] == GAME_DAY.isoformat()


def test_materialising_the_same_partition_twice_does_not_duplicate(history, instance, defs):
    tables = [BY_NAME["bdl_player_boxscores"], BY_NAME["player_daily_cache"]]
    for _ in range(2):
        [outcome] = runs.materialize([GAME_DAY], tables, dagster_instance=instance, defs=defs)
        assert outcome.success
    box = history.partition_stats(tables[0], GAME_DAY, GAME_DAY)[GAME_DAY].rows
    assert box == len(League(DEFAULT_SEED).feed("bdl_player_boxscores", GAME_DAY))
    dupes = history.query(
        'SELECT player_id, COUNT(*) AS n FROM "nba_predictions"."player_daily_cache" '
        "WHERE game_date = $d GROUP BY player_id HAVING COUNT(*) > 1",
        {"d": GAME_DAY},
    )
    assert dupes == []
    assert len(materializations(instance, tables[1], GAME_DAY)) == 2


def test_an_outage_fails_the_run_with_the_reason_and_keeps_old_rows(history, instance, monkeypatch):
    from selfheal_dagster.definitions import defs as load

    box = BY_NAME["bdl_player_boxscores"]
    before = history.partition_stats(box, GAME_DAY, GAME_DAY)[GAME_DAY]
    monkeypatch.setenv("SELFHEAL_LEAGUE_OUTAGES", f"bdl_player_boxscores@{GAME_DAY}")
    [outcome] = runs.materialize([GAME_DAY], [box], dagster_instance=instance, defs=load())
    assert not outcome.success
    assert any("simulated outage" in e and "bdl_player_boxscores" in e for e in outcome.errors)
    assert history.partition_stats(box, GAME_DAY, GAME_DAY)[GAME_DAY] == before


def test_consecutive_dates_are_one_ranged_run(history, instance, defs):
    days = [GAME_DAY, GAME_DAY - timedelta(days=1)]
    [outcome] = runs.materialize(days, in_phase(4), dagster_instance=instance, defs=defs)
    assert outcome.days == tuple(sorted(days)) and outcome.success
    run = instance.get_run_by_id(outcome.run_id)
    assert run.tags["dagster/asset_partition_range_start"] == str(min(days))
    assert run.tags["dagster/asset_partition_range_end"] == str(GAME_DAY)


def snapshot(wh, tables, day):
    """Every row of each table's partition, _loaded_at included: any rewrite shows."""
    out = {}
    for t in tables:
        out[t.name] = wh.query(
            f"SELECT * FROM {wh.ref(t)} WHERE {t.partition_column} = $d ORDER BY ALL", {"d": day}
        )
    return out


def test_phase4_on_a_missing_input_fails_naming_it_and_keeps_every_row(
    history, instance, defs, league
):
    phase4 = in_phase(4)
    [first] = runs.materialize([GAME_DAY], phase4, dagster_instance=instance, defs=defs)
    assert first.success, first.errors
    before = snapshot(history, phase4, GAME_DAY)
    assert all(before[t.name] for t in phase4)
    read = next(
        GAME_DAY - timedelta(days=i)
        for i in range(2, 15)
        if league.games_on(GAME_DAY - timedelta(i))
    )
    history.punch_gap(BY_NAME["bdl_player_boxscores"], read)
    [again] = runs.materialize([GAME_DAY], phase4, dagster_instance=instance, defs=defs)
    assert not again.success
    assert any(
        f"nba_raw/bdl_player_boxscores: 1 game day missing, {read}" in e for e in again.errors
    )
    assert snapshot(history, phase4, GAME_DAY) == before


def test_a_refusal_over_a_month_of_missing_inputs_is_one_line_the_dates_in_the_log(
    warehouse, instance, defs, league
):
    """A fresh warehouse: the cache of GAME_DAY reads 30 days of box scores and gamebooks
    that are not there. The step says so in one line, each input once with its count and
    first..last dates; every date is in the run's event log."""
    cache = BY_NAME["player_daily_cache"]
    [outcome] = runs.materialize([GAME_DAY], [cache], dagster_instance=instance, defs=defs)
    assert not outcome.success
    [error] = outcome.errors
    game_days = [
        d for d in (GAME_DAY - timedelta(days=k) for k in range(30, 0, -1)) if league.games_on(d)
    ]
    assert len(game_days) >= 26 and "\n" not in error and len(error) < 400
    span = f"{len(game_days)} game days missing, {game_days[0]}..{game_days[-1]}"
    assert f"nba_raw/bdl_player_boxscores: {span}" in error
    assert f"nba_raw/nbac_gamebook_player_stats: {span}" in error
    logged = [
        e.user_message
        for e in instance.all_logs(outcome.run_id)
        if e.level == logging.WARNING and "not computed" in (e.user_message or "")
    ]
    [detail] = logged
    assert len(detail.splitlines()) == 1  # one date: its line names every missing input
    assert all(str(d) in detail for d in game_days)


def test_a_short_same_day_input_stops_the_run_before_its_readers(
    history, instance, league, monkeypatch
):
    from selfheal_dagster.definitions import defs as load

    odds, features = BY_NAME["odds_api_game_lines"], BY_NAME["ml_feature_store_v2"]
    tables = [odds, *in_phase(4)]
    [first] = runs.materialize([GAME_DAY], tables, dagster_instance=instance, defs=load())
    assert first.success, first.errors
    before = snapshot(history, [features], GAME_DAY)
    monkeypatch.setenv("SELFHEAL_LEAGUE_SHORT", f"odds_api_game_lines@{GAME_DAY}:0.4")
    [short] = runs.materialize([GAME_DAY], tables, dagster_instance=instance, defs=load())
    assert not short.success
    # The blocking row-count check of the odds failed; the feature store never ran.
    assert len(materializations(instance, features, GAME_DAY)) == 1
    assert not any(e.startswith(features.key.replace("/", "__")) for e in short.errors)
    assert snapshot(history, [features], GAME_DAY) == before


def test_one_check_of_a_table_runs_alone_and_records_only_its_result(
    history, instance, defs, league
):
    """The three checks of a table are one step, but a person can still run one of them (the
    UI's "Execute" on a check): the key check alone on a doubled partition fails, and the row
    count and freshness record nothing."""
    box = BY_NAME["bdl_player_boxscores"]
    [outcome] = runs.materialize([GAME_DAY], [box], dagster_instance=instance, defs=defs)
    assert outcome.success, outcome.errors
    history.multiply(box, GAME_DAY, 2)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={check_key(box, "key")}
    )
    result = job.execute_in_process(
        instance=instance, partition_key=GAME_DAY.isoformat(), raise_on_error=False
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.passed) == ("key", False)
    assert evaluation.metadata["duplicated_keys"].value == len(league.feed(box.name, GAME_DAY))
    assert result.success  # the key check does not block: a failing result, not a failed run
    for name, results in (("row_count", 1), ("freshness", 1), ("key", 2)):
        records = instance.event_log_storage.get_asset_check_execution_history(
            check_key(box, name), limit=10
        )
        assert len(records) == results, name
