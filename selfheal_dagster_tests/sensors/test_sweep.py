"""The sweep and the in-run checks, through a real Dagster instance."""

from datetime import timedelta

import dagster as dg

from selfheal_dagster import runs
from selfheal_dagster.core.checks import CHECKS
from selfheal_dagster.core.dates import eastern
from selfheal_dagster.defs.checks import check_key
from selfheal_dagster.instance import check_records
from selfheal_dagster.tables import BY_NAME, TABLES
from selfheal_dagster_tests.support import GAME_DAY

BOX = BY_NAME["bdl_player_boxscores"]
BOOK = BY_NAME["nbac_gamebook_player_stats"]
# "Today" for the sweep: Phase 2 watch window = GAME_DAY+1, GAME_DAY, GAME_DAY-1.
NOW = eastern(GAME_DAY + timedelta(days=2), 13)


def sweep(defs, instance, now=NOW, **config):
    result = defs.resolve_job_def("sweep_job").execute_in_process(
        instance=instance,
        run_config={
            "ops": {"sweep_checks": {"config": {"now": now.isoformat(), **config}}},
            **runs.QUIET,
        },
    )
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in output.step_output_data.metadata.items()}


def latest(instance, table, day, check="row_count"):
    [record, *_] = check_records.history(instance, check_key(table, check), day)
    return record, check_records.evaluation(record)


def test_sweep_records_per_partition_results_readable_from_the_instance(history, instance, defs):
    history.punch_gap(BOX, GAME_DAY)
    summary = sweep(defs, instance)
    assert "bdl_player_boxscores 2026-01-20 row_count" in summary["failing"]
    assert summary["failing_count"] == summary["failing"].count("\n- ") + 1
    assert summary["first_failing"] in summary["failing"]
    record, ev = latest(instance, BOX, GAME_DAY)
    assert record.status == check_records.FAILED and record.partition == "2026-01-20"
    assert ev.metadata["rows"].value == 0 and ev.metadata["status"].value == "missing"
    assert ev.severity == dg.AssetCheckSeverity.ERROR
    record, ev = latest(instance, BOOK, GAME_DAY)
    assert record.status == check_records.SUCCEEDED and ev.metadata["rows"].value > 0
    # Phase 4 watch window is "today": never materialised there, past noon -> missing.
    cache = BY_NAME["player_daily_cache"]
    record, ev = latest(instance, cache, GAME_DAY + timedelta(days=2), "freshness")
    assert record.status == check_records.FAILED and ev.metadata["status"].value == "missing"
    # Dates outside the watch window are not evaluated.
    assert (
        check_records.history(instance, check_key(BOX, "row_count"), GAME_DAY - timedelta(2)) == []
    )


def test_sweep_issues_one_warehouse_query_per_table_however_wide(history, instance, defs):
    narrow = sweep(defs, instance, phase2_days=1, phase4_days=1)
    wide = sweep(defs, instance, phase2_days=30, phase4_days=10)
    assert narrow["warehouse_queries"] == wide["warehouse_queries"] == len(TABLES)
    assert wide["evaluated"] == len(CHECKS) * (4 * 30 + 5 * 10)


def test_sweep_records_changes_and_reasserts_but_does_not_flood(history, league, instance, defs):
    history.punch_gap(BOX, GAME_DAY)
    first = sweep(defs, instance)
    assert first["recorded"] == first["evaluated"]
    assert sweep(defs, instance, now=NOW + timedelta(minutes=5))["recorded"] == 0
    # The gap is fixed: exactly the outcomes that changed are recorded.
    history.replace_partition(BOX, GAME_DAY, league.feed(BOX.name, GAME_DAY))
    changed = sweep(defs, instance, now=NOW + timedelta(minutes=10))
    assert 1 <= changed["recorded"] <= 2
    record, ev = latest(instance, BOX, GAME_DAY)
    assert record.status == check_records.SUCCEEDED
    # After the re-assert interval everything is recorded again.
    again = sweep(defs, instance, now=NOW + timedelta(minutes=45), reassert_minutes=30)
    assert again["recorded"] == again["evaluated"]


def test_checks_run_in_the_materialising_run_and_flag_a_short_delivery(
    history, instance, monkeypatch
):
    from selfheal_dagster.definitions import defs as load

    monkeypatch.setenv("SELFHEAL_LEAGUE_SHORT", f"bdl_player_boxscores@{GAME_DAY}:0.5")
    [outcome] = runs.materialize([GAME_DAY], [BOX], dagster_instance=instance, defs=load())
    assert outcome.success  # the check does not block; it records a failure
    record, ev = latest(instance, BOX, GAME_DAY)
    assert record.run_id == outcome.run_id and record.status == check_records.FAILED
    assert ev.metadata["status"].value == "short"
    monkeypatch.delenv("SELFHEAL_LEAGUE_SHORT")
    [outcome] = runs.materialize([GAME_DAY], [BOX], dagster_instance=instance, defs=load())
    record, _ = latest(instance, BOX, GAME_DAY)
    assert record.run_id == outcome.run_id and record.status == check_records.SUCCEEDED


def test_sweep_sensor_launches_a_sweep_unless_one_is_in_flight(instance, defs):
    sensor = defs.resolve_sensor_def("sweep_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    request = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    assert isinstance(request, dg.RunRequest) and request.run_key.startswith("sweep-")
    job = defs.resolve_job_def("sweep_job")
    instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    skipped = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    assert isinstance(skipped, dg.SkipReason) and "still in flight" in skipped.skip_message


def ui_status(instance, table, day, check="row_count"):
    """What the UI's partitions view of a check shows for a date: the latest result, if it
    targets the partition's latest materialisation (otherwise the date shows no status)."""
    [info] = instance.event_log_storage.get_asset_check_partition_info(
        [check_key(table, check)], partition_keys=[day.isoformat()]
    )
    return info.latest_execution_status if info.is_current else None


def test_a_sweep_failure_shows_on_the_partition_until_the_heal_passes(history, instance, defs):
    [first] = runs.materialize([GAME_DAY], [BOX], dagster_instance=instance, defs=defs)
    assert ui_status(instance, BOX, GAME_DAY) == check_records.SUCCEEDED
    history.punch_gap(BOX, GAME_DAY)
    sweep(defs, instance)
    assert ui_status(instance, BOX, GAME_DAY) == check_records.FAILED  # the date shows failed
    record, _ = latest(instance, BOX, GAME_DAY)
    target = check_records.evaluation(record).target_materialization_data
    assert target.run_id == first.run_id  # it judged the partition that run wrote
    runs.materialize([GAME_DAY], [BOX], dagster_instance=instance, defs=defs)
    assert ui_status(instance, BOX, GAME_DAY) == check_records.SUCCEEDED  # then passed


def test_sweep_job_for_one_partition_rechecks_exactly_that_date(history, instance, defs):
    """A person re-checks a date from sweep_job's Partitions tab: every check of every table
    on that date is recorded, even unchanged, and no other date."""
    sweep(defs, instance)  # the window's results exist and are fresh
    before = {
        (t.name, d): len(check_records.history(instance, check_key(t, "row_count"), d))
        for t in TABLES
        for d in (GAME_DAY - timedelta(days=1), GAME_DAY, GAME_DAY + timedelta(days=1))
    }
    result = runs.execute(
        defs.resolve_job_def("sweep_job"),
        instance,
        tags={"dagster/partition": GAME_DAY.isoformat()},
        run_config={"ops": {"sweep_checks": {"config": {"now": NOW.isoformat()}}}, **runs.QUIET},
    )
    assert result.success
    for (name, day), n in before.items():
        table = BY_NAME[name]
        found = check_records.history(instance, check_key(table, "row_count"), day)
        assert len(found) == n + (day == GAME_DAY), (name, day)
        if day == GAME_DAY:
            assert found[0].run_id == result.run_id
            freshness = check_records.history(instance, check_key(table, "freshness"), day)
            assert freshness[0].run_id == result.run_id
