"""The BigQuery warehouse without a cloud account: a recording client, the jobs it is given
(load jobs, decorators, write dispositions, parameters), and the shape of their SQL read by
sqlglot. BigQuery's own front end (ZetaSQL) analyses and runs the SQL in test_zetasql.py."""

from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlglot
from google.cloud import bigquery
from sqlglot import exp

from selfheal_dagster.adapters.warehouse import WarehouseError
from selfheal_dagster.adapters.warehouse.bigquery import BigQueryWarehouse
from selfheal_dagster.core.history import HealingResult, HealRecord
from selfheal_dagster.tables import BY_NAME, TABLES, execution_order, in_phase

PROJECT = "nba-props-prod"
DAY = date(2026, 1, 20)
BOX = BY_NAME["bdl_player_boxscores"]
EVIL = "2026-01-20'; DROP TABLE x; --"


class Job:
    def __init__(self, rows=(), affected=0):
        self.rows, self.num_dml_affected_rows = list(rows), affected

    def result(self):
        return Result(self.rows)


class Result(list):
    @property
    def total_rows(self):
        return len(self)


class RecordingClient:
    """Answers like BigQuery would, records every job it was given."""

    def __init__(self, answer=lambda sql, params: []):
        self.queries, self.loads, self.answer = [], [], answer

    def query(self, sql, job_config=None, location=None):
        params = {
            p.name: getattr(p, "value", getattr(p, "values", None))
            for p in job_config.query_parameters
        }
        self.queries.append((sql, job_config, params))
        return Job(self.answer(sql, params), affected=1)

    def load_table_from_json(self, rows, destination, job_config=None, location=None):
        self.loads.append((rows, destination, job_config))
        return Job()


def warehouse(client):
    return BigQueryWarehouse(PROJECT, "US", client=lambda: nullcontext(client))


def assert_bigquery_sql(sql):
    tree = sqlglot.parse_one(sql, read="bigquery")
    assert not isinstance(tree, exp.Command) and not list(tree.find_all(exp.Command)), sql
    return tree


def record():
    return HealRecord(
        phase="phase2",
        target_date=DAY,
        missing_components=["bdl_player_boxscores"],
        healing_result=HealingResult(triggered=True, reason="missing"),
        correlation_id="a1b2c3d4-0000-0000-0000-000000000000",
        timestamp=datetime(2026, 1, 21, tzinfo=UTC),
    )


def test_an_outcome_update_writes_only_its_columns():
    """Every statement is analysed by ZetaSQL in test_zetasql.py; here, what sqlglot can tell
    of the statement's shape: the outcome MERGE leaves the alert notes alone."""
    client = RecordingClient()
    warehouse(client).update_history(record(), columns=["outcome", "success"])
    [(sql, _, _)] = client.queries
    assert isinstance(assert_bigquery_sql(sql), exp.Merge)
    updated = sql.split("UPDATE SET", 1)[1].split("WHEN NOT")[0]
    assert "outcome = s.outcome" in updated and "alerts" not in updated


def test_ddl_partitions_by_the_date_column_and_clusters():
    ddl = warehouse(RecordingClient()).ddl()
    box = next(s for s in ddl if "bdl_player_boxscores" in s)
    tree = assert_bigquery_sql(box)
    assert "PARTITION BY game_date CLUSTER BY player_id, team_abbr" in box
    assert "`nba-props-prod.nba_raw.bdl_player_boxscores`" in box
    assert tree.find(exp.Schema) is not None
    assert any("self_heal_history" in s for s in ddl)


def test_replace_is_one_write_truncate_job_into_the_partition_decorator(league):
    client = RecordingClient()
    rows = league.feed(BOX.name, DAY)
    result = warehouse(client).replace_partition(BOX, DAY, rows)
    assert result.rows == len(rows)
    assert client.queries == []  # no DELETE beforehand: one job does it all
    [(payload, destination, config)] = client.loads
    assert destination == "nba-props-prod.nba_raw.bdl_player_boxscores$20260120"
    assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    assert config.time_partitioning.field == "game_date"
    assert config.time_partitioning.type_ == bigquery.TimePartitioningType.DAY
    assert len(payload) == len(rows) and payload[0]["game_date"] == "2026-01-20"
    assert {f.name for f in config.schema} == {*BOX.column_names, "_loaded_at"}


def test_a_phase4_processor_is_one_query_job_into_the_partition_decorator():
    client = RecordingClient()
    cache = BY_NAME["player_daily_cache"]
    warehouse(client).run_processor(cache, [DAY])
    [(sql, config, params)] = client.queries
    assert config.destination.table_id == "player_daily_cache$20260120"
    assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    assert config.time_partitioning.field == "game_date"
    assert params["days"] == [DAY] and params["since"] == date(2025, 12, 21)
    assert "@d" in sql and "@since" in sql and "$d" not in sql
    assert "`nba-props-prod.nba_raw.bdl_player_boxscores`" in sql  # one identifier, as quote()


def assert_bigquery_script(sql):
    """A multi-statement script: every statement parses as BigQuery, none as a Command."""
    trees = sqlglot.parse(sql, read="bigquery")
    for tree in trees:
        assert not isinstance(tree, exp.Command) and not list(tree.find_all(exp.Command)), sql
    return [type(t).__name__ for t in trees]


RANGE = [date(2026, 1, 18), date(2026, 1, 19), DAY]


def test_a_phase4_range_is_one_transaction_job_then_one_count():
    client = RecordingClient(
        lambda sql, p: [{"day": d, "n": 7} for d in p["days"]] if "COUNT(*) AS n" in sql else []
    )
    cache = BY_NAME["player_daily_cache"]
    result = warehouse(client).run_processor(cache, RANGE)
    [(script, config, params), (count, _, count_params)] = client.queries
    assert assert_bigquery_script(script) == ["Transaction", "Delete", "Insert", "Commit"]
    assert config.destination is None  # DML in a transaction, not a truncating write
    assert params["days"] == RANGE and params["since"] == date(2025, 12, 19)
    assert params["until"] == DAY and params["lookback"] == 30
    [days_param] = [p for p in config.query_parameters if p.name == "days"]
    assert days_param.array_type == "DATE"
    assert "IN UNNEST(@days)" in script and "UNNEST(@days)" in script.split("INSERT", 1)[1]
    assert_bigquery_sql(count)
    assert count_params["days"] == RANGE
    assert result.by_day == dict.fromkeys(RANGE, 7) and result.rows == 21


def test_a_phase2_range_is_staged_by_one_load_then_one_transaction(league):
    client = RecordingClient()
    rows = {d: league.feed(BOX.name, d) for d in RANGE}
    result = warehouse(client).replace_partitions(BOX, rows)
    [(payload, staging, config)] = client.loads
    assert staging.startswith("nba-props-prod.nba_raw._stage_bdl_player_boxscores_")
    assert "$" not in staging and len(payload) == sum(map(len, rows.values()))
    assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    [expire, script, drop] = [sql for sql, _, _ in client.queries]
    assert assert_bigquery_script(expire) == ["Alter"]
    assert assert_bigquery_script(script) == ["Transaction", "Delete", "Insert", "Commit"]
    assert f"FROM `{staging}`" in script
    assert assert_bigquery_script(drop) == ["Drop"] and staging in drop
    assert result.by_day == {d: len(r) for d, r in rows.items()}


def test_a_failed_range_transaction_still_drops_its_staging_table(league):
    class Failing(RecordingClient):
        def query(self, sql, job_config=None, location=None):
            if sql.startswith("BEGIN"):
                raise RuntimeError("Transaction aborted: quota exceeded")
            return super().query(sql, job_config, location)

    client = Failing()
    with pytest.raises(WarehouseError, match="quota exceeded"):
        warehouse(client).replace_partitions(BOX, {d: league.feed(BOX.name, d) for d in RANGE})
    assert client.queries[-1][0].startswith("DROP TABLE IF EXISTS")


def test_the_sweep_is_one_information_schema_query_per_dataset():
    def answer(sql, params):
        if "nba_raw.INFORMATION_SCHEMA" in sql:
            return [
                {
                    "table_name": "bdl_player_boxscores",
                    "partition_id": "20260120",
                    "total_rows": 185,
                    "last_modified_time": datetime(2026, 1, 21, 15, tzinfo=UTC),
                },
                {
                    "table_name": "nbac_schedule",
                    "partition_id": None,
                    "total_rows": 900,
                    "last_modified_time": None,
                },
            ]
        if "GROUP BY" in sql:
            return [{"day": DAY, "n": 8, "loaded": datetime(2026, 1, 21, 14, tzinfo=UTC)}]
        return []

    client = RecordingClient(answer)
    stats = warehouse(client).window_stats(TABLES, date(2025, 7, 1), DAY)
    partitions = [q for q, _, _ in client.queries if "INFORMATION_SCHEMA.PARTITIONS" in q]
    assert len(partitions) == len({t.dataset for t in TABLES}) == 3
    assert stats["bdl_player_boxscores"][DAY].rows == 185
    # The schedule is not partitioned: its counts come from one GROUP BY on the date column.
    [fallback] = [q for q, _, _ in client.queries if "GROUP BY" in q]
    assert "nbac_schedule" in fallback and stats["nbac_schedule"][DAY].rows == 8
    assert all(
        p["first"] == "20250701" and p["last"] == "20260120"
        for q, _, p in client.queries
        if "INFORMATION_SCHEMA" in q
    )


def test_no_value_is_ever_formatted_into_sql(league):
    client = RecordingClient(lambda sql, p: [{"n": 3}] if "COUNT" in sql else [])
    wh = warehouse(client)
    wh.run_processor(BY_NAME["ml_feature_store_v2"], [DAY])
    wh.window_stats([BOX], DAY, DAY)
    wh.punch_gap(BOX, DAY, keep=0.5)
    wh.history(day=DAY, correlation_id=EVIL)
    wh.insert_history(record())
    for sql, _, _ in client.queries:
        assert "2026-01-20" not in sql and "20260120" not in sql and "DROP TABLE" not in sql
    assert any(p.get("cid") == EVIL for _, _, p in client.queries)
    for call in (
        lambda: wh.replace_partition(BOX, EVIL, []),
        lambda: wh.run_processor(BOX, [EVIL]),
        lambda: wh.window_stats([BOX], EVIL, DAY),
        lambda: wh.punch_gap(BOX, EVIL),
        lambda: wh.history(day=EVIL),
    ):
        with pytest.raises(WarehouseError, match="expected a date"):
            call()


def test_identifiers_are_validated_before_quoting():
    with pytest.raises(WarehouseError, match="refusing BigQuery project"):
        BigQueryWarehouse("x`; DROP", "US", client=lambda: nullcontext(RecordingClient()))


def test_history_insert_reports_whether_it_stored_a_new_record():
    client = RecordingClient()
    assert warehouse(client).insert_history(record()) is True
    sql, config, params = client.queries[-1]
    assert "WHEN NOT MATCHED THEN INSERT" in sql and "WHEN MATCHED" not in sql
    assert params["p_id"] == "2026-01-20_phase2_a1b2c3d4"
    nulls = {p.name: p.type_ for p in config.query_parameters if p.value is None}
    assert nulls["p_success"] == "BOOL" and nulls["p_resolved_at"] == "TIMESTAMP"


def test_a_ticks_history_records_are_one_merge_statement():
    """One DML statement is atomic: a reader sees an incident's records of a tick all, or
    none of them yet."""
    client = RecordingClient()
    records = [replace(record(), target_date=DAY + timedelta(days=i)) for i in range(3)]
    warehouse(client).insert_histories([*records, records[0]])  # a repeat is sent once
    [(sql, config, params)] = client.queries
    tree = assert_bigquery_sql(sql)
    assert isinstance(tree, exp.Merge) and sql.count("UNION ALL") == 2
    assert [params[f"p{i}_id"] for i in range(3)] == [r.id for r in records]
    assert {p.name: p.type_ for p in config.query_parameters}["p2_held"] == "STRING"


@pytest.mark.parametrize("table", execution_order(in_phase(4)), ids=lambda t: t.name)
def test_phase4_sql_is_one_source_transpiled_for_bigquery(table):
    sql = warehouse(RecordingClient()).phase4_sql(table)
    tree = assert_bigquery_sql(sql)
    assert isinstance(tree, exp.Select)
    assert "$" not in sql.replace("`", "")
