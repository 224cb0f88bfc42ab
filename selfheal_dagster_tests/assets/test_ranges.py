"""Ranged runs: a range of dates computed in one run gives exactly the rows of one run per
date, writes all of its dates or none, and leaves a check result per partition."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import date, timedelta

import dagster as dg
import duckdb
import pytest

from selfheal_dagster import runs
from selfheal_dagster.adapters.settings import season_start
from selfheal_dagster.adapters.warehouse import WarehouseError
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.core.checks import CHECKS
from selfheal_dagster.core.dates import date_range
from selfheal_dagster.instance import check_records
from selfheal_dagster.tables import BY_NAME, LOADED_AT, TABLES, execution_order, in_phase
from selfheal_dagster_tests.support import GAME_DAY, bound, load_phase2

OPENING = season_start()  # 2024-10-22: the first partition, no history to look back on
THANKSGIVING = date(2024, 11, 28)  # no games
# Two ranges: the season's first week (lookback windows still filling) and the days around
# Thanksgiving (a no-game date inside a range, every window full: 35 days in); the dates
# between are Phase 2 history both ways, written directly (a ranged run costs Dagster an
# event per date, asset and check: about 15 ms each).
OPENING_WEEK = date_range(OPENING, OPENING + timedelta(days=6))
AROUND_THANKSGIVING = date_range(THANKSGIVING - timedelta(days=2), THANKSGIVING + timedelta(days=1))
SPAN = [*OPENING_WEEK, *AROUND_THANKSGIVING]
BOX = BY_NAME["bdl_player_boxscores"]
CACHE = BY_NAME["player_daily_cache"]


def _value(v):
    # Float aggregates are summed in whatever order the engine's threads finish, so the last
    # bits of an average may differ between any two runs (even two one-date runs of the same
    # date); 12 significant digits is what the rows mean.
    return float(f"{v:.12g}") if isinstance(v, float) else v


def fingerprints(wh: DuckDBWarehouse, days) -> dict[str, tuple[int, str]]:
    """Per (table, date): row count and a hash of every row, ``_loaded_at`` aside."""
    out = {}
    for table in TABLES:
        rows = wh.query(f"SELECT * EXCLUDE ({LOADED_AT}) FROM {wh.ref(table)} ORDER BY ALL")
        for day in days:
            mine = [
                {k: _value(v) for k, v in r.items()}
                for r in rows
                if r[table.partition_column] == day
            ]
            blob = json.dumps(mine, default=str, sort_keys=True).encode()
            out[f"{table.name} {day}"] = (len(mine), hashlib.sha256(blob).hexdigest())
    return out


def test_a_range_run_gives_the_rows_of_one_run_per_date(env, league, instance, defs, tmp_path):
    between = (OPENING_WEEK[-1] + timedelta(days=1), AROUND_THANKSGIVING[0] - timedelta(days=1))
    # Per date, outside Dagster: each table's one-date write, Phase 2 then Phase 4, in order.
    per_date = DuckDBWarehouse(tmp_path / "per_date.duckdb")
    load_phase2(per_date, league, OPENING, SPAN[-1])
    for table in execution_order(in_phase(4)):
        for day in SPAN:
            per_date.run_processor(table, [day])
    # Ranged, through Dagster: each range's Phase 2 in one run, then its Phase 4 in another.
    ranged = DuckDBWarehouse(env / "warehouse.duckdb")
    load_phase2(ranged, league, *between)
    outcomes = runs.materialize(SPAN, TABLES, dagster_instance=instance, defs=defs, by_phase=True)
    assert [(o.phases, o.days, o.success) for o in outcomes] == [
        ((2,), tuple(OPENING_WEEK), True),
        ((4,), tuple(OPENING_WEEK), True),
        ((2,), tuple(AROUND_THANKSGIVING), True),
        ((4,), tuple(AROUND_THANKSGIVING), True),
    ]
    expected, got = fingerprints(per_date, SPAN), fingerprints(ranged, SPAN)
    assert got == expected
    # The ranges hold what the claim is about: a no-game date (zero rows everywhere), the
    # first dates of the season (short lookback: Phase 4 rows before the window is full),
    # and dates whose every window is full of history.
    assert all(got[f"{t.name} {THANKSGIVING}"][0] == 0 for t in TABLES)
    first_week = [got[f"{CACHE.name} {d}"][0] for d in OPENING_WEEK]
    assert first_week[0] == 0 and any(first_week)  # nobody has played yet, then some have
    lookback = max(t.lookback_days for t in in_phase(4))
    assert AROUND_THANKSGIVING[0] - timedelta(days=lookback) > OPENING
    assert all(got[f"{t.name} {AROUND_THANKSGIVING[0]}"][0] > 0 for t in TABLES)


def test_every_partition_of_a_range_run_has_its_own_check_results(env, league, instance, defs):
    days = date_range(GAME_DAY - timedelta(days=4), GAME_DAY)
    [outcome] = runs.materialize(days, in_phase(2), dagster_instance=instance, defs=defs)
    assert outcome.success
    for table in in_phase(2):
        for name in CHECKS:
            key = dg.AssetCheckKey(dg.AssetKey(table.key_path), name)
            for day in days:
                record = check_records.latest_result(instance, key, day)
                assert record is not None, (table.name, name, day)
                assert record.run_id == outcome.run_id
                assert check_records.evaluation(record).passed
    # ... and each partition its own row count (in its row-count result) and materialisation.
    box = dg.AssetKey(BOX.key_path)
    rows_key = dg.AssetCheckKey(box, "row_count")
    for day in days:
        record = check_records.latest_result(instance, rows_key, day)
        rows = check_records.evaluation(record).metadata["rows"].value
        assert rows == league_rows(league, day)
    status = instance.get_status_by_partition(
        box, [d.isoformat() for d in days], dg.DailyPartitionsDefinition(OPENING.isoformat())
    )
    assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}
    # The UI shows a partition's check status only for a result that targets its latest
    # materialisation: every date's result does.
    infos = instance.event_log_storage.get_asset_check_partition_info([rows_key])
    current = {i.partition_key: (i.is_current, i.latest_execution_status) for i in infos}
    assert current == {d.isoformat(): (True, check_records.SUCCEEDED) for d in days}


def league_rows(league, day):
    return len(league.feed(BOX.feed, day))


def test_a_short_date_in_a_range_fails_its_check_there_and_stops_what_reads_it(
    env, league, instance, defs, monkeypatch
):
    days = date_range(GAME_DAY - timedelta(days=2), GAME_DAY)
    short = days[1]
    monkeypatch.setenv("SELFHEAL_LEAGUE_SHORT", f"nbac_schedule@{short}:0.5")
    from selfheal_dagster.definitions import defs as load

    [outcome] = runs.materialize(days, in_phase(2), dagster_instance=instance, defs=load())
    assert not outcome.success  # the schedule's row count is blocking: Phase 4 reads it
    assert any("row_count failed on 1 of 3 dates" in e and str(short) in e for e in outcome.errors)
    key = dg.AssetCheckKey(dg.AssetKey(BY_NAME["nbac_schedule"].key_path), "row_count")
    passed = {
        d: check_records.evaluation(check_records.latest_result(instance, key, d)).passed
        for d in days
    }
    assert passed == {days[0]: True, short: False, days[2]: True}


def snapshot(wh: DuckDBWarehouse, table, days):
    rows = wh.query(
        f"SELECT * FROM {wh.ref(table)} WHERE {table.partition_column} BETWEEN $a AND $b "
        "ORDER BY ALL",
        {"a": min(days), "b": max(days)},
    )
    return rows


def test_a_range_write_failing_midway_leaves_every_partition_as_it_was(history, league):
    days = date_range(GAME_DAY - timedelta(days=5), GAME_DAY)
    before = snapshot(history, BOX, days)
    assert before
    rows = {d: league.feed(BOX.feed, d) for d in days}
    bad = dict(rows[days[-2]][3])
    bad["points"] = "not a number"  # the engine refuses it deep into the range's inserts
    rows[days[-2]] = [*rows[days[-2]][:3], bad, *rows[days[-2]][4:]]
    with pytest.raises(WarehouseError, match="rolled back"):
        history.replace_partitions(BOX, rows)
    assert snapshot(history, BOX, days) == before


def test_a_processor_range_failing_midway_leaves_every_partition_as_it_was(history, monkeypatch):
    days = date_range(GAME_DAY - timedelta(days=3), GAME_DAY)
    for table in execution_order(in_phase(4)):
        history.run_processor(table, days)
    before = snapshot(history, CACHE, days)
    assert before
    real = DuckDBWarehouse._exec

    def failing_after_the_delete(self, con, sql, params=None):
        if sql.startswith("INSERT"):
            raise duckdb.IOException("disk full (injected)")
        return real(self, con, sql, params)

    monkeypatch.setattr(DuckDBWarehouse, "_exec", failing_after_the_delete)
    with pytest.raises(WarehouseError, match="rolled back.*disk full"):
        history.run_processor(CACHE, days)
    monkeypatch.setattr(DuckDBWarehouse, "_exec", real)
    assert snapshot(history, CACHE, days) == before


def test_dagster_asset_materialize_takes_a_partition_range(env, history, league):
    """The documented CLI: one run computes five dates of Phase 4."""
    first, last = GAME_DAY - timedelta(days=4), GAME_DAY
    load_phase2(history, league, first - timedelta(days=35), GAME_DAY - timedelta(days=32))
    done = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "dagster"),
            "asset",
            "materialize",
            "-m",
            "selfheal_dagster.definitions",
            "--select",
            "group:phase4",
            "--partition-range",
            f"{first}...{last}",
        ],
        capture_output=True,
        text=True,
        timeout=bound(600),
        env={**os.environ, "DAGSTER_HOME": str(env / "dagster_home")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stats = history.partition_stats(CACHE, first, last)
    assert sorted(stats) == date_range(first, last) and all(s.rows for s in stats.values())
    with dg.DagsterInstance.from_config(str(env / "dagster_home")) as inst:
        records = inst.get_run_records()
        assert len(records) == 1
        tags = records[0].dagster_run.tags
        assert tags["dagster/asset_partition_range_start"] == str(first)
        assert tags["dagster/asset_partition_range_end"] == str(last)
