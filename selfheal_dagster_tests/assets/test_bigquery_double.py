"""The strict BigQuery double refuses what BigQuery refuses: for each rule, a planted job that
breaks it (sent by the real client, the way the product sent it before) is refused naming
the rule, and a control that keeps it passes. Each rule cites its BigQuery page in
``bigquery_double.RULES``."""

from __future__ import annotations

import threading
import time
from datetime import date

import pytest
from google.api_core import exceptions
from google.cloud import bigquery

from selfheal_dagster_tests.bigquery_double import RULES
from selfheal_dagster_tests.support import BQ_LOCATION, BQ_PROJECT, bound

DAY = date(2026, 1, 20)
T = f"{BQ_PROJECT}.nba_raw.t"
LABELS = {"app": "selfheal", "component": "test"}
CAP = 10 * 1024**3


@pytest.fixture
def bq(bigquery):
    """The double with one dataset and a partitioned table requiring a partition filter,
    whose load time is REQUIRED (as this product created its tables before)."""
    bigquery.admin(f"CREATE SCHEMA `{BQ_PROJECT}.nba_raw` OPTIONS (location = '{BQ_LOCATION}')")
    bigquery.admin(
        f"CREATE TABLE `{T}` (game_date DATE, n INT64, _loaded_at TIMESTAMP NOT NULL) "
        "PARTITION BY game_date OPTIONS (require_partition_filter = TRUE)"
    )
    bigquery.admin(
        f"CREATE TABLE `{BQ_PROJECT}.nba_raw.u` (game_date DATE, n INT64) PARTITION BY game_date"
    )
    for n, day in enumerate([DAY, date(2026, 1, 19)]):
        bigquery.admin(
            f"INSERT INTO `{T}` (game_date, n, _loaded_at) "
            f"VALUES (DATE '{day}', {n}, CURRENT_TIMESTAMP())"
        )
    return bigquery


def client(location: str | None = BQ_LOCATION) -> bigquery.Client:
    return bigquery.Client(project=BQ_PROJECT, location=location)


def config(**changes) -> bigquery.QueryJobConfig:
    values = {"labels": LABELS, "maximum_bytes_billed": CAP, "job_timeout_ms": 60_000}
    values.update(changes)
    return bigquery.QueryJobConfig(**{k: v for k, v in values.items() if v is not None})


def query(sql: str, job_config=None, location: str | None = BQ_LOCATION, **params):
    cfg = job_config or config()
    cfg.query_parameters = [
        bigquery.ScalarQueryParameter(k, "DATE" if isinstance(v, date) else "INT64", v)
        for k, v in params.items()
    ]
    return list(client(location).query(sql, job_config=cfg, location=location).result())


def refused(double, call) -> str:
    """The rule of the one job ``call`` got refused, after checking the client saw an error."""
    before = len(double.refused)
    with pytest.raises(exceptions.GoogleAPICallError):
        call()
    [job] = double.refused[before:]
    assert job.rule in RULES, job.rule
    return job.rule


def test_a_query_into_a_required_column_through_a_decorator_is_refused(bq):
    """The one-date Phase 4 write this product sent: a query's NULLABLE columns into a table
    whose _loaded_at is REQUIRED (googleapis/google-cloud-python#8093)."""
    sql = "SELECT @d AS game_date, 7 AS n, CURRENT_TIMESTAMP() AS _loaded_at"
    into = bigquery.TableReference.from_string(f"{T}$20260120")
    truncate = bigquery.WriteDisposition.WRITE_TRUNCATE
    assert (
        refused(bq, lambda: query(sql, config(destination=into, write_disposition=truncate), d=DAY))
        == "schema_mode"
    )
    assert "changed mode from REQUIRED to NULLABLE" in bq.refused[-1].error["message"]
    relax = [bigquery.SchemaUpdateOption.ALLOW_FIELD_RELAXATION]
    ok = config(destination=into, write_disposition=truncate, schema_update_options=relax)
    query(sql, ok, d=DAY)  # allowed where it is meant: the column is relaxed
    assert [r["n"] for r in bq.rows("nba_raw", "t", "game_date = ?", [DAY])] == [7]
    assert bq.tables[("nba_raw", "t")].field("_loaded_at").mode == "NULLABLE"


def test_rows_outside_the_decorators_partition_are_refused(bq):
    rows = [{"game_date": "2026-01-19", "n": 1, "_loaded_at": "2026-01-21T00:00:00+00:00"}]
    load = bigquery.LoadJobConfig(
        schema=[
            bigquery.SchemaField("game_date", "DATE"),
            bigquery.SchemaField("n", "INT64"),
            bigquery.SchemaField("_loaded_at", "TIMESTAMP", mode="REQUIRED"),
        ],
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        labels=LABELS,
        job_timeout_ms=60_000,
    )

    def into(partition: str):
        return lambda: (
            client().load_table_from_json(rows, f"{T}${partition}", job_config=load).result()
        )

    assert refused(bq, into("20260120")) == "decorator_rows"
    into("20260119")()  # the partition the rows belong to: accepted


def test_a_read_that_does_not_prune_a_table_requiring_a_filter_is_refused(bq):
    """The schedule read this product's Phase 4 sent: filtered only by a join to the spine."""
    spine = (
        f"WITH spine AS (SELECT d FROM UNNEST([@d]) AS d) SELECT x.n FROM `{T}` AS x "
        "JOIN spine AS s ON x.game_date = s.d"
    )
    assert refused(bq, lambda: query(spine, d=DAY)) == "partition_filter"
    assert "without a filter over column(s) 'game_date'" in bq.refused[-1].error["message"]
    assert (
        refused(bq, lambda: query(f"SELECT n FROM `{T}` WHERE n = @n", n=1)) == "partition_filter"
    )
    pruned = spine + " WHERE x.game_date BETWEEN @d AND @d"
    assert [r["n"] for r in query(pruned, d=DAY)] == [0]
    assert query(f"SELECT COUNT(*) AS c FROM `{BQ_PROJECT}.nba_raw.u`")[0]["c"] == 0  # no option


def test_a_second_transaction_on_a_table_is_cancelled_and_dml_waits(bq):
    """The range write this product sent (BEGIN; DELETE; INSERT; COMMIT), twice at once for
    different dates: BigQuery cancels one. One MERGE each, at once: both run, one after the
    other."""
    bq.mutation_seconds = 1.0

    def script(day: date) -> str:
        return (
            f"BEGIN TRANSACTION; DELETE FROM `{T}` WHERE game_date = DATE '{day}'; "
            f"INSERT INTO `{T}` (game_date, n, _loaded_at) "
            f"VALUES (DATE '{day}', 9, CURRENT_TIMESTAMP()); COMMIT TRANSACTION;"
        )

    def merge(day: date) -> str:
        return (
            f"MERGE `{T}` AS t USING (SELECT DATE '{day}' AS game_date, 9 AS n, "
            "CURRENT_TIMESTAMP() AS _loaded_at) AS s ON FALSE "
            f"WHEN NOT MATCHED BY SOURCE AND t.game_date = DATE '{day}' THEN DELETE "
            "WHEN NOT MATCHED THEN INSERT (game_date, n, _loaded_at) "
            "VALUES (s.game_date, s.n, s._loaded_at)"
        )

    for statement, expect in ((script, "transaction_conflict"), (merge, None)):
        errors: list[Exception] = []
        before = len(bq.refused)

        def send(day: date, statement=statement, errors=errors) -> None:
            try:
                query(statement(day))
            except exceptions.GoogleAPICallError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(d,)) for d in (DAY, date(2026, 1, 19))]
        for t in threads:
            t.start()
            time.sleep(0.3)
        for t in threads:
            t.join(bound(60))
        rules = [j.rule for j in bq.refused[before:]]
        assert rules == ([expect] if expect else []), rules
        assert len(errors) == (1 if expect else 0)
    assert "Transaction is aborted due to concurrent update" in str(
        [j.error for j in bq.refused if j.rule == "transaction_conflict"]
    )
    assert {r["n"] for r in bq.rows("nba_raw", "t")} == {9}


@pytest.mark.parametrize(
    ("labels", "message"),
    [(None, "Job has no labels"), ({"asset": "nba_raw/Box"}, "Invalid label value")],
)
def test_a_job_without_labels_or_with_labels_bigquery_rejects_is_refused(bq, labels, message):
    sql = f"SELECT n FROM `{T}` WHERE game_date = @d"
    assert refused(bq, lambda: query(sql, config(labels=labels), d=DAY)) == "labels"
    assert message in bq.refused[-1].error["message"]
    long = {"component": "x" * 64}
    assert refused(bq, lambda: query(sql, config(labels=long), d=DAY)) == "labels"


def test_a_null_into_a_required_column_is_refused(bq):
    rows = [{"game_date": "2026-01-20", "n": 1}]  # no _loaded_at: NULL
    load = bigquery.LoadJobConfig(
        schema=[
            bigquery.SchemaField("game_date", "DATE"),
            bigquery.SchemaField("n", "INT64"),
            bigquery.SchemaField("_loaded_at", "TIMESTAMP", mode="REQUIRED"),
        ],
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        labels=LABELS,
        job_timeout_ms=60_000,
    )
    assert (
        refused(bq, lambda: client().load_table_from_json(rows, T, job_config=load).result())
        == "required_null"
    )
    insert = f"INSERT INTO `{T}` (game_date, n) VALUES (@d, 3)"  # DML into the same column
    assert refused(bq, lambda: query(insert, d=DAY)) == "required_null"
    assert len(bq.rows("nba_raw", "t")) == 2


def test_a_query_without_a_byte_cap_or_over_it_is_refused(bq):
    sql = f"SELECT n FROM `{T}` WHERE game_date = @d"
    no_cap = config(maximum_bytes_billed=None)
    assert refused(bq, lambda: query(sql, no_cap, d=DAY)) == "maximum_bytes_billed"
    # Two tables read: 20 MB billed (10 MB at least each), over a cap of 15 MB.
    both = sql + f" UNION ALL SELECT n FROM `{BQ_PROJECT}.nba_raw.u`"
    tight = config(maximum_bytes_billed=15 * 1024**2)
    assert refused(bq, lambda: query(both, tight, d=DAY)) == "maximum_bytes_billed"
    assert "Query exceeded limit for bytes billed" in bq.refused[-1].error["message"]
    assert [r["n"] for r in query(sql, tight, d=DAY)] == [0]  # one table: 10 MB, under


def test_a_job_without_a_timeout_is_refused(bq):
    sql = f"SELECT n FROM `{T}` WHERE game_date = @d"
    assert refused(bq, lambda: query(sql, config(job_timeout_ms=None), d=DAY)) == "job_timeout"


def test_a_dataset_created_outside_the_configured_location_is_refused(bq):
    """The CREATE SCHEMA this product sent: no location option, and no job location when
    SELFHEAL_BQ_LOCATION was unset (BigQuery then creates it in US)."""
    bare = f"CREATE SCHEMA IF NOT EXISTS `{BQ_PROJECT}.nba_other`"
    assert refused(bq, lambda: query(bare, location=None)) == "dataset_location"
    query(bare + f" OPTIONS (location = '{BQ_LOCATION}')", location=None)
    assert bq.datasets["nba_other"] == BQ_LOCATION
    # And a job in another location does not see the data.
    sql = f"SELECT n FROM `{T}` WHERE game_date = @d"
    assert refused(bq, lambda: query(sql, location="US", d=DAY)) == "not_found"
    assert "was not found in location US" in bq.refused[-1].error["message"]


def test_a_table_the_principal_cannot_read_is_refused(bq):
    bq.forbid("nba_raw", "t")
    sql = f"SELECT n FROM `{T}` WHERE game_date = @d"
    assert refused(bq, lambda: query(sql, d=DAY)) == "access_denied"
    with pytest.raises(exceptions.Forbidden):
        client().get_table(T)


def test_a_statement_bigquerys_front_end_rejects_is_refused(bq):
    sql = f"SELECT no_such_column FROM `{T}` WHERE game_date = @d"
    assert refused(bq, lambda: query(sql, d=DAY)) == "zetasql"
    assert "Unrecognized name: no_such_column" in bq.refused[-1].error["message"]


def test_partition_metadata_has_commit_times_no_empty_partitions_and_a_lag(bq):
    """INFORMATION_SCHEMA.PARTITIONS as BigQuery documents it."""
    sql = (
        f"SELECT partition_id, total_rows, last_modified_time FROM "
        f"`{BQ_PROJECT}.nba_raw.INFORMATION_SCHEMA.PARTITIONS` WHERE table_name = 't'"
    )
    found = {r["partition_id"]: r for r in query(sql)}
    assert set(found) == {"20260120", "20260119"}
    assert all(r["total_rows"] == 1 and r["last_modified_time"] for r in found.values())
    query(f"DELETE FROM `{T}` WHERE game_date = @d", d=DAY)
    assert {r["partition_id"] for r in query(sql)} == {"20260119"}  # empty: no row
    bq.lag_seconds = 3600
    query(
        f"INSERT INTO `{T}` (game_date, n, _loaded_at) VALUES (@d, 5, CURRENT_TIMESTAMP())",
        d=DAY,
    )
    assert "20260120" not in {r["partition_id"] for r in query(sql)}  # not seen yet
    assert len(bq.rows("nba_raw", "t", "game_date = ?", [DAY])) == 1  # but written
    bq.lag_seconds = 0
    assert "20260120" in {r["partition_id"] for r in query(sql)}


def test_a_dry_run_costs_nothing_and_says_what_a_query_would_read(bq):
    def dry(sql: str, **params) -> int:
        cfg = config(dry_run=True, use_query_cache=False)
        cfg.query_parameters = [
            bigquery.ScalarQueryParameter(k, "DATE", v) for k, v in params.items()
        ]
        return client().query(sql, job_config=cfg).total_bytes_processed

    one = dry(f"SELECT * FROM `{T}` WHERE game_date = @d", d=DAY)
    both = dry(f"SELECT * FROM `{T}` WHERE game_date BETWEEN @a AND @d", a=date(2026, 1, 1), d=DAY)
    assert 0 < one < both == 2 * one
    assert len(bq.rows("nba_raw", "t")) == 2  # nothing ran
    with pytest.raises(exceptions.BadRequest, match="partition elimination"):
        dry(f"SELECT * FROM `{T}`")
