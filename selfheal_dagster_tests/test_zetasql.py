"""Production SQL checked by BigQuery's own front end (ZetaSQL), offline.

1. Every statement a production scenario sends through ``BigQueryWarehouse`` — DDL, Phase 2
   loads, one-date and ranged Phase 4 writes, the sweep's ``INFORMATION_SCHEMA.PARTITIONS``
   reads and their fallback, heal-history writes and reads — is analysed against a catalog
   built from the registry, each query parameter with the BigQuery type production declares.
   Planted mistakes (a wrong column, an unknown function, a parameter of the wrong type) are
   rejected.
2. The five Phase 4 processors, as production sends them (transpiled, with its parameters),
   run on ZetaSQL's reference evaluator over 35 days of the simulated league around a season's
   opening night (no-game days among them); their rows equal DuckDB's. A control with one
   input value changed must differ.
3. The DML the evaluator executes (the range DELETE, the INSERT from staging, the history
   UPDATE) runs with the rows expected afterwards. MERGE and multi-statement scripts are
   analysed only; the evaluator does not execute them.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from google.cloud import bigquery

from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_SEED
from selfheal_dagster.adapters.warehouse.base import processor_params
from selfheal_dagster.adapters.warehouse.bigquery import TYPES, BigQueryWarehouse
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.core import history
from selfheal_dagster.core.calendar import opening_night
from selfheal_dagster.core.history import HealingResult, HealRecord
from selfheal_dagster.tables import BY_NAME, LOADED_AT, TABLES, execution_order, in_phase
from selfheal_dagster_tests.test_bigquery import PROJECT, RecordingClient

BOX = BY_NAME["bdl_player_boxscores"]
DAY = date(2026, 1, 20)
PARTITIONS = ("table_name", "STRING"), ("partition_id", "STRING"), ("total_rows", "INT64")
PARTITIONS += (("last_modified_time", "TIMESTAMP"),)


def ident(*parts: str) -> str:
    return ".".join((PROJECT, *parts))


def columns(table) -> tuple[tuple[str, str], ...]:
    return (*((c.name, TYPES[c.type]) for c in table.columns), (LOADED_AT, "TIMESTAMP"))


HISTORY_COLUMNS = tuple((c, TYPES[k]) for c, k in history.COLUMNS.items())


def catalog(sql: str = ""):
    """The registry's tables, the heal history, each dataset's INFORMATION_SCHEMA.PARTITIONS,
    and the run-time staging tables ``sql`` names (``_stage_<table>_<hex>``)."""
    from selfheal_dagster_tests.zetasql_engine import Table

    out = [Table(ident(t.dataset, t.name), columns(t)) for t in TABLES]
    out.append(Table(ident(history.DATASET, history.TABLE), HISTORY_COLUMNS))
    for dataset in sorted({t.dataset for t in TABLES}):
        out.append(Table(ident(dataset, "INFORMATION_SCHEMA", "PARTITIONS"), PARTITIONS))
    for dataset, name, staged in re.findall(r"\.(\w+)\.(_stage_(\w+?)_[0-9a-f]{12})`", sql):
        out.append(Table(ident(dataset, name), columns(BY_NAME[staged])))
    return out


def param_types(config) -> dict:
    from selfheal_dagster_tests.zetasql_engine import array, scalar

    out = {}
    for p in config.query_parameters:
        if isinstance(p, bigquery.ArrayQueryParameter):
            out[p.name] = array(p.array_type)
        else:
            out[p.name] = scalar(p.type_)
    return out


def record(**changes) -> HealRecord:
    base = HealRecord(
        phase="phase2",
        target_date=DAY,
        missing_components=[BOX.name],
        healing_result=HealingResult(triggered=True, reason="0 rows"),
        correlation_id="a1b2c3d4-0000-4000-8000-000000000000",
        timestamp=datetime(2026, 1, 21, 15, tzinfo=UTC),
        detected_at=datetime(2026, 1, 21, 15, tzinfo=UTC),
        assets=[BOX.key],
        cause="bdl_player_boxscores row_count: 0 rows for 7 games (expected >= 112)",
    )
    return replace(base, **changes)


def answer(sql: str, params: dict) -> list[dict]:
    """What BigQuery would return, enough for every code path to run: one table read back
    unpartitioned from INFORMATION_SCHEMA (so the fallback query runs too)."""
    if "INFORMATION_SCHEMA" in sql:
        return [
            {"table_name": n, "partition_id": None, "total_rows": 1, "last_modified_time": None}
            for n in params["tables"][:1]
        ]
    if "COUNT(*) AS n" in sql:
        return [{"n": 10, "day": DAY, "loaded": None}]
    return []


@pytest.fixture(scope="module")
def scenario():
    """Every statement production sends in a day's work, with its job configuration."""
    league = League(DEFAULT_SEED)
    client = RecordingClient(answer)
    wh = BigQueryWarehouse(PROJECT, "US", client=lambda: nullcontext(client))
    wh.ensure_tables()
    wh.replace_partition(BOX, DAY, [])  # a date with no rows: one DELETE
    wh.replace_partition(BOX, DAY, league.feed(BOX.name, DAY))  # a load job, no SQL
    span = [DAY - timedelta(days=2), DAY - timedelta(days=1)]
    wh.replace_partitions(BOX, {d: league.feed(BOX.name, d) for d in span})  # staged range
    for table in execution_order(in_phase(4)):
        wh.run_processor(table, [DAY])
        wh.run_processor(table, [DAY - timedelta(days=i) for i in range(3)])
    wh.window_stats(TABLES, DAY - timedelta(days=3), DAY)  # the sweep's read, and fallback
    wh.punch_gap(BOX, DAY)
    wh.punch_gap(BOX, DAY, keep=0.5)
    mine = record()
    wh.insert_history(mine)
    wh.insert_histories([mine, record(target_date=DAY + timedelta(days=1), attempt=2)])
    wh.update_history(mine.resolved(history.Outcome.HEALED, mine.timestamp, "healed", "r1"))
    wh.update_history(mine, columns=history.OUTCOME_COLUMNS)
    wh.note_alert(mine.id, {"kind": "parent", "key": "parent", "delivered": True, "ts": "1.1"})
    wh.history(day=DAY, correlation_id="a1b2", since=mine.timestamp, until=mine.timestamp)
    wh.history()
    return client.queries


def analyse(zetasql, queries, mutate=None):
    """(statements analysed, [(statement, ZetaSQL's message)] rejected, the resolved kinds
    of statement). With ``mutate``, only the statements it changes are analysed (the others
    are the ones the unmutated run analyses)."""
    from selfheal_dagster_tests.zetasql_engine import Rejected

    count, rejected, kinds = 0, [], set()
    for sql, config, _ in queries:
        types = param_types(config)
        if mutate is not None:
            changed = mutate(sql, types)
            if changed == (sql, types):
                continue
            sql, types = changed
        try:
            found = zetasql.analyze_script(sql, catalog(sql), types)
        except Rejected as exc:
            rejected.append((sql[:120], str(exc)))
            continue
        count += len(found)
        kinds |= {kind for kind, _ in found}
    return count, rejected, kinds


def test_every_statement_production_sends_is_analysed_by_bigquerys_front_end(zetasql, scenario):
    count, rejected, kinds = analyse(zetasql, scenario)
    print(f"{count} statements analysed, {len(rejected)} rejected")
    assert rejected == [], "\n".join(message for _, message in rejected)
    assert {
        "resolved_create_statement_node",  # CREATE SCHEMA / TABLE
        "resolved_alter_object_stmt_node",  # the history's added columns
        "resolved_query_stmt_node",
        "resolved_delete_stmt_node",
        "resolved_insert_stmt_node",  # in the range scripts
        "resolved_merge_stmt_node",
        "resolved_update_stmt_node",
        "resolved_begin_stmt_node",
        "resolved_commit_stmt_node",
        "resolved_drop_stmt_node",
    } <= kinds
    assert count >= len(scenario) + 3 * 6  # every range script is four statements


def _wrong_param(sql: str, types: dict):
    from selfheal_dagster_tests.zetasql_engine import scalar

    if "@p_success" in sql:  # a STRING bound where the BOOL column is written
        types = {**types, "p_success": scalar("STRING")}
    return sql, types


MUTANTS = {
    "wrong column": (lambda sql, types: (sql.replace("target_date", "target_dat"), types)),
    "unknown function": (lambda sql, types: (sql.replace("DATE_DIFF(", "DATE_DIFFX("), types)),
    "parameter of the wrong type": _wrong_param,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=list(MUTANTS))
def test_a_planted_mistake_is_rejected_naming_the_statement(zetasql, scenario, mutant):
    _, rejected, _ = analyse(zetasql, scenario, MUTANTS[mutant])
    assert rejected, f"{mutant}: nothing rejected"
    said = " ".join(message for _, message in rejected)
    expected = {
        "wrong column": "Unrecognized name: target_dat",
        "unknown function": "Function not found: DATE_DIFFX",
        "parameter of the wrong type": "STRING",
    }[mutant]
    assert expected in said, said


# --- Phase 4 executed with BigQuery's semantics -----------------------------------------------


OPENING = opening_night(2025)
# League input: two days before opening night (no games), then the season's first weeks:
# 35 days. Phase 4 is computed for dates across it (the evaluator is slow; each date reads up
# to 30 days of that input): a no-game day, opening night and the days after it (lookbacks
# still filling), and dates whose lookback is whole.
SPAN = [OPENING + timedelta(days=i) for i in range(-2, 33)]
OUT = [OPENING + timedelta(days=i) for i in (-1, 0, 1, 2, 9, 17, 25, 32)]


@pytest.fixture(scope="module")
def league_rows(tmp_path_factory):
    """35 days of the simulated league around opening night in DuckDB, Phase 4 computed by
    DuckDB as the local warehouse computes it; every table's rows as the engines see them."""
    league = League(DEFAULT_SEED)
    assert not league.games_on(OUT[0]) and league.games_on(OUT[1]), "a no-game day, opening night"
    wh = DuckDBWarehouse(tmp_path_factory.mktemp("zeta") / "warehouse.duckdb")
    for table in in_phase(2):
        wh.replace_partitions(table, {day: league.feed(table.name, day) for day in SPAN})
    for table in execution_order(in_phase(4)):
        wh.run_processor(table, OUT)
    return {t.name: wh.query(f"SELECT * FROM {wh.ref(t)}") for t in TABLES}


def bq_params(table, days) -> dict:
    """``processor_params`` as production declares them to BigQuery."""
    from selfheal_dagster.adapters.warehouse.bigquery import _param

    out = {}
    for name, python in processor_params(table, days).items():
        p = _param(name, python)
        kind = f"ARRAY<{p.array_type}>" if isinstance(p, bigquery.ArrayQueryParameter) else p.type_
        out[name] = (kind, python)
    return out


def same(a: list[dict], b: list[dict]) -> bool:
    """Equal rows, floats to 9 significant digits (the engines sum in their own order)."""

    def norm(row: dict) -> tuple:
        return tuple(
            (k, float(f"{v:.9g}") if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in sorted(row.items())
            if k != LOADED_AT
        )

    return sorted(map(norm, a), key=repr) == sorted(map(norm, b), key=repr)


def evaluate(zetasql, rows: dict[str, list[dict]], only=None) -> dict[str, list[dict]]:
    """Each processor's production SQL on the evaluator, in dependency order: Phase 2 from
    ``rows``, each Phase 4 input from the evaluator's own earlier results."""
    from selfheal_dagster_tests.zetasql_engine import Table

    bq = BigQueryWarehouse(PROJECT, "US", client=lambda: nullcontext(None))
    computed = {t.name: rows[t.name] for t in in_phase(2)}
    for table in execution_order(in_phase(4)):
        if only and table.name not in only:
            computed[table.name] = rows[table.name]
            continue
        tables = [
            Table(ident(t.dataset, t.name), columns(t), tuple(computed.get(t.name, ())))
            for t in TABLES
        ]
        found = zetasql.query(bq.phase4_sql(table), tables, bq_params(table, OUT))
        computed[table.name] = [{**r, LOADED_AT: None} for r in found]
    return computed


@pytest.fixture(scope="module")
def evaluated(zetasql, league_rows):
    """Every processor on the evaluator, over the league's rows (computed once)."""
    return evaluate(zetasql, league_rows)


def test_the_five_processors_compute_duckdbs_rows_with_bigquery_semantics(evaluated, league_rows):
    found = evaluated
    for table in execution_order(in_phase(4)):
        mine, theirs = found[table.name], league_rows[table.name]
        print(f"{table.name}: {len(mine)} rows on the evaluator, {len(theirs)} on DuckDB")
        assert mine and same(mine, theirs), table.name


def test_the_comparison_fails_when_one_input_value_changes(zetasql, league_rows, evaluated):
    changed = dict(league_rows)
    box = [dict(r) for r in league_rows[BOX.name]]
    made = next(i for i, r in enumerate(box) if r["paint_fgm"] and OUT[-2] > r["game_date"])
    box[made]["paint_fgm"] -= 1  # one made paint shot fewer, on a date the last dates read
    changed[BOX.name] = box
    found = evaluate(zetasql, changed, only={"team_defense_zone_analysis"})
    assert not same(found["team_defense_zone_analysis"], league_rows["team_defense_zone_analysis"])
    # And unchanged, the same processor agrees: the difference is that one value.
    assert same(evaluated["team_defense_zone_analysis"], league_rows["team_defense_zone_analysis"])


# --- the DML the evaluator executes ---------------------------------------------------------


def statements(zetasql, sql, types):
    return [text for _, text in zetasql.analyze_script(sql, catalog(sql), types)]


def test_the_range_delete_and_the_insert_from_staging_leave_the_rows_expected(zetasql, league_rows):
    from selfheal_dagster_tests.zetasql_engine import Table, array, scalar

    bq = BigQueryWarehouse(PROJECT, "US", client=lambda: nullcontext(None))
    days = SPAN[20:23]  # a range of the box scores
    staging = ident(BOX.dataset, "_stage_bdl_player_boxscores_0123456789ab")
    script = bq.range_script(BOX, f"SELECT * FROM `{staging}`")
    types = {"days": array("DATE"), "loaded_at": scalar("TIMESTAMP")}
    _, delete, insert, _ = statements(zetasql, script, types)
    params = {"days": ("ARRAY<DATE>", days), "loaded_at": ("TIMESTAMP", datetime.now(UTC))}
    target = ident(BOX.dataset, BOX.name)
    stored = [{**r, "_row": i} for i, r in enumerate(league_rows[BOX.name])]
    keyed = Table(target, (("_row", "INT64"), *columns(BOX)), tuple(stored), key="_row")
    gone = zetasql.modify(delete, [keyed], params)
    assert {op for op, _ in gone} == {"DELETE"}
    assert sorted(r["_row"] for _, r in gone) == [
        r["_row"] for r in stored if r["game_date"] in days
    ]
    # The staged rows go in with the run's load time; nothing else is written.
    fresh = [
        dict(r, points=r["points"] + 1) for r in league_rows[BOX.name] if r["game_date"] in days
    ]
    kept = tuple(r for r in league_rows[BOX.name] if r["game_date"] not in days)
    tables = [Table(target, columns(BOX), kept), Table(staging, columns(BOX), tuple(fresh))]
    added = zetasql.modify(insert, tables, params)
    assert {op for op, _ in added} == {"INSERT"} and len(added) == len(fresh)
    at = params["loaded_at"][1]
    assert all(abs((r[LOADED_AT] - at).total_seconds()) < 1e-3 for _, r in added)
    assert same([r for _, r in added], fresh)


def test_the_history_alert_note_update_appends_to_the_json_list(zetasql):
    from selfheal_dagster_tests.zetasql_engine import Table

    client = RecordingClient()
    bq = BigQueryWarehouse(PROJECT, "US", client=lambda: nullcontext(client))
    note = {"kind": "parent", "key": "parent", "delivered": True, "ts": "1.1"}
    bq.note_alert(record().id, note)
    [(sql, config, sent)] = client.queries
    row = {**record().to_row(), "alerts": json.dumps([{"kind": "open", "key": "open"}])}
    other = {**record(target_date=DAY + timedelta(days=1)).to_row(), "alerts": "[]"}
    table = Table(ident(history.DATASET, history.TABLE), HISTORY_COLUMNS, (row, other), key="id")
    params = {name: ("STRING", value) for name, value in sent.items()}
    [(op, updated)] = zetasql.modify(sql, [table], params)
    assert op == "UPDATE" and updated["id"] == row["id"]
    assert json.loads(updated["alerts"]) == [{"kind": "open", "key": "open"}, note]
