"""Production SQL checked by BigQuery's own front end (ZetaSQL), offline.

1. Every statement a production scenario sends through ``BigQueryWarehouse`` to the strict
   BigQuery double (``prod_scenario.run``: DDL, Phase 2 loads, one-date and ranged Phase 4
   writes, the sweep's ``INFORMATION_SCHEMA.PARTITIONS`` reads, the checks' counts,
   heal-history writes and reads, a gap) is analysed as the double receives it, against the
   double's catalog, each query parameter with the BigQuery type the job declares. Planted
   mistakes (a wrong column, an unknown function, a parameter of the wrong type) are
   rejected.
2. The five Phase 4 processors, as production sends them (transpiled, with its parameters),
   run on ZetaSQL's reference evaluator over 35 days of the simulated league around a season's
   opening night (no-game days among them); their rows equal DuckDB's. A control with one
   input value changed must differ.
3. The DML the evaluator executes (an empty date's DELETE, the history's alert UPDATE) runs
   with the rows expected afterwards. MERGE is analysed only here (the evaluator does not
   execute it); the double executes every MERGE the scenario sends, and its Phase 4 rows are
   compared with DuckDB's in test_bigquery.py.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import nullcontext
from datetime import date, timedelta

import pytest
from google.cloud import bigquery

from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_SEED
from selfheal_dagster.adapters.warehouse.base import processor_params
from selfheal_dagster.adapters.warehouse.bigquery import TYPES, BigQueryWarehouse
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.core import history
from selfheal_dagster.core.calendar import opening_night
from selfheal_dagster.tables import BY_NAME, LOADED_AT, TABLES, execution_order, in_phase
from selfheal_dagster_tests import prod_scenario
from selfheal_dagster_tests.support import (
    BQ_PROJECT as PROJECT,
)
from selfheal_dagster_tests.support import (
    zeta_params,
)

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


@pytest.fixture(scope="module")
def scenario(prod_day):
    """Every statement production sends in a day's work, with its parameters' types, as the
    double received (and ZetaSQL analysed) it; and the double."""
    from selfheal_dagster_tests.bigquery_double import _params

    statements = [
        (job.sql, _params(job.config["query"])[1])
        for job in prod_day.received
        if job.kind == "query"
    ]
    return statements, prod_day


def analyse(zetasql, statements, mutate=None):
    """(statements analysed, [(statement, ZetaSQL's message)] rejected). With ``mutate``,
    only the statements it changes are analysed again."""
    from selfheal_dagster_tests.zetasql_engine import Rejected

    count, rejected = 0, []
    for sql, types in statements:
        types = zeta_params(types)
        if mutate is not None:
            changed = mutate(sql, types)
            if changed == (sql, types):
                continue
            sql, types = changed
        try:
            count += len(zetasql.analyze_script(sql, catalog(sql), types))
        except Rejected as exc:
            rejected.append((sql[:120], str(exc)))
    return count, rejected


def test_every_statement_production_sends_is_analysed_by_bigquerys_front_end(scenario):
    statements, double = scenario
    analyser = double.analyser
    print(f"{analyser.count} statements analysed, {len(double.refused)} refused")
    assert double.refused == [], [j.error for j in double.refused]
    assert {
        "resolved_create_statement_node",  # CREATE SCHEMA / TABLE
        "resolved_alter_object_stmt_node",  # the history's added columns, staging expiry
        "resolved_query_stmt_node",
        "resolved_delete_stmt_node",
        "resolved_merge_stmt_node",  # every write of dates, and the history
        "resolved_update_stmt_node",
        "resolved_drop_stmt_node",
    } <= analyser.kinds
    assert analyser.count >= len({sql for sql, _ in statements}) - 1


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
    _, rejected = analyse(zetasql, scenario[0], MUTANTS[mutant])
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


def test_an_empty_dates_delete_removes_exactly_that_date(zetasql, league_rows):
    from selfheal_dagster_tests.zetasql_engine import Table

    wh = BigQueryWarehouse(PROJECT, "US", client=lambda: nullcontext(None))
    day = SPAN[21]
    sent = []
    wh._query = lambda sql, params=None, what="": sent.append((sql, params))  # noqa: SLF001
    wh.replace_partition(BOX, day, [])
    [(sql, params)] = sent
    target = ident(BOX.dataset, BOX.name)
    stored = [{**r, "_row": i} for i, r in enumerate(league_rows[BOX.name])]
    keyed = Table(target, (("_row", "INT64"), *columns(BOX)), tuple(stored), key="_row")
    gone = zetasql.modify(sql, [keyed], {"d": ("DATE", params["d"])})
    assert {op for op, _ in gone} == {"DELETE"}
    assert sorted(r["_row"] for _, r in gone) == [
        r["_row"] for r in stored if r["game_date"] == day
    ]
    assert gone


def record(**changes):
    return prod_scenario.record(**changes)


def test_the_history_alert_note_update_appends_to_the_json_list(zetasql):
    from selfheal_dagster_tests.zetasql_engine import Table

    bq = BigQueryWarehouse(PROJECT, "US", client=lambda: nullcontext(None))
    captured = []
    bq._query = lambda sql, params=None, what="": captured.append((sql, params))  # noqa: SLF001
    note = {"kind": "parent", "key": "parent", "delivered": True, "ts": "1.1"}
    bq.note_alert(record().id, note)
    [(sql, sent)] = captured
    row = {**record().to_row(), "alerts": json.dumps([{"kind": "open", "key": "open"}])}
    other = {**record(target_date=DAY + timedelta(days=1)).to_row(), "alerts": "[]"}
    table = Table(ident(history.DATASET, history.TABLE), HISTORY_COLUMNS, (row, other), key="id")
    params = {name: ("STRING", value) for name, value in sent.items()}
    [(op, updated)] = zetasql.modify(sql, [table], params)
    assert op == "UPDATE" and updated["id"] == row["id"]
    assert json.loads(updated["alerts"]) == [{"kind": "open", "key": "open"}, note]
