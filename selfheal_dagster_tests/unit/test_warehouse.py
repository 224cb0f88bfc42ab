from datetime import date, timedelta

import pytest

from selfheal_dagster.adapters.warehouse import WarehouseError
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.tables import BY_NAME, TABLES
from selfheal_dagster_tests.support import GAME_DAY

BOX = BY_NAME["bdl_player_boxscores"]


def count(wh: DuckDBWarehouse, day: date) -> int:
    stats = wh.partition_stats(BOX, day, day).get(day)
    return stats.rows if stats else 0


def test_creates_every_registry_table_in_its_dataset(warehouse):
    warehouse.ensure_tables()
    found = {
        (r["table_schema"], r["table_name"])
        for r in warehouse.query("SELECT table_schema, table_name FROM information_schema.tables")
    }
    assert {(t.dataset, t.name) for t in TABLES} <= found


def test_replacing_a_partition_twice_leaves_the_same_rows(warehouse, league):
    rows = league.feed(BOX.feed, GAME_DAY)
    warehouse.replace_partition(BOX, GAME_DAY, rows)
    first = warehouse.query(
        'SELECT * EXCLUDE (_loaded_at) FROM "nba_raw"."bdl_player_boxscores" ORDER BY player_id'
    )
    warehouse.replace_partition(BOX, GAME_DAY, rows)
    second = warehouse.query(
        'SELECT * EXCLUDE (_loaded_at) FROM "nba_raw"."bdl_player_boxscores" ORDER BY player_id'
    )
    assert count(warehouse, GAME_DAY) == len(rows) > 0
    assert first == second


def test_replace_touches_only_its_own_date(warehouse, league):
    other = GAME_DAY - timedelta(days=1)
    warehouse.replace_partition(BOX, other, league.feed(BOX.feed, other))
    warehouse.replace_partition(BOX, GAME_DAY, league.feed(BOX.feed, GAME_DAY))
    warehouse.replace_partition(BOX, GAME_DAY, [])
    assert count(warehouse, GAME_DAY) == 0
    assert count(warehouse, other) == len(league.feed(BOX.feed, other))


def test_an_insert_failing_mid_partition_keeps_the_previous_rows(warehouse, league):
    rows = league.feed(BOX.feed, GAME_DAY)
    warehouse.replace_partition(BOX, GAME_DAY, rows)
    before = warehouse.partition_stats(BOX, GAME_DAY, GAME_DAY)[GAME_DAY]
    # 250 rows go in two INSERT chunks; the second chunk has a value DuckDB cannot store.
    bad = [dict(r) for r in (rows * 2)[:250]]
    bad[240]["points"] = "forty"
    with pytest.raises(WarehouseError, match="rolled back"):
        warehouse.replace_partition(BOX, GAME_DAY, bad)
    after = warehouse.partition_stats(BOX, GAME_DAY, GAME_DAY)[GAME_DAY]
    assert after == before


def test_rows_of_another_date_are_refused(warehouse, league):
    rows = league.feed(BOX.feed, GAME_DAY)
    with pytest.raises(WarehouseError, match="not of that partition"):
        warehouse.replace_partition(BOX, GAME_DAY + timedelta(days=1), rows)


def test_partition_stats_is_one_query_for_any_window(warehouse, league):
    for offset in range(3):
        day = GAME_DAY - timedelta(days=offset)
        warehouse.replace_partition(BOX, day, league.feed(BOX.feed, day))
    for days in (1, 30, 180):
        warehouse.statements = 0
        stats = warehouse.partition_stats(BOX, GAME_DAY - timedelta(days=days), GAME_DAY)
        assert warehouse.statements == 1
        assert len(stats) == min(days + 1, 3)
    stats = warehouse.partition_stats(BOX, GAME_DAY, GAME_DAY)[GAME_DAY]
    assert stats.loaded_at is not None and stats.loaded_at.tzinfo is not None


def test_punch_gap_deletes_or_keeps_a_fraction(warehouse, league):
    rows = league.feed(BOX.feed, GAME_DAY)
    warehouse.replace_partition(BOX, GAME_DAY, rows)
    assert warehouse.punch_gap(BOX, GAME_DAY, keep=0.6) == (len(rows), int(len(rows) * 0.6))
    assert count(warehouse, GAME_DAY) == int(len(rows) * 0.6)
    warehouse.punch_gap(BOX, GAME_DAY)
    assert count(warehouse, GAME_DAY) == 0


def test_a_locked_file_waits_then_fails_with_one_line(tmp_path, capsys, monkeypatch):
    import subprocess
    import sys

    import duckdb

    path = tmp_path / "locked.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(path)!r}); "
            "print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr("selfheal_dagster.adapters.warehouse.duckdb.LOCK_SAY_SECONDS", 0.2)
        with pytest.raises(WarehouseError, match="cannot open the DuckDB warehouse") as info:
            DuckDBWarehouse(path, lock_timeout=1.0).ensure_tables()
        assert "\n" not in str(info.value)
        assert f"still locked by another process (pid {holder.pid}) after 1s" in str(info.value)
        said = capsys.readouterr().err.splitlines()
        assert said and all(
            line.startswith(f"waiting for the DuckDB warehouse {path}: locked by another process")
            for line in said
        )
        assert f"(pid {holder.pid})" in said[0]
    finally:
        holder.kill()
        holder.wait()


def test_a_read_creates_nothing_a_write_creates_what_it_needs(tmp_path, league):
    import duckdb

    path = tmp_path / "fresh" / "warehouse.duckdb"
    wh = DuckDBWarehouse(path)
    assert wh.window_stats(TABLES, GAME_DAY, GAME_DAY) == {t.name: {} for t in TABLES}
    assert wh.history() == [] and not path.exists()
    path.parent.mkdir()
    duckdb.connect(str(path)).close()  # a file with no tables in it: still read as empty
    assert wh.history() == [] and wh.partition_stats(BOX, GAME_DAY, GAME_DAY) == {}
    con = duckdb.connect(str(path))
    assert con.execute("SELECT COUNT(*) FROM information_schema.tables").fetchone() == (0,)
    con.close()
    wh.replace_partition(BOX, GAME_DAY, league.feed(BOX.name, GAME_DAY))  # the write path
    assert wh.partition_stats(BOX, GAME_DAY, GAME_DAY)[GAME_DAY].rows > 0
    assert wh.history() == []  # created with the rest, empty
