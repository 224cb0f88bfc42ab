"""The BigQuery warehouse against the strict BigQuery double (``bigquery_double.py``): the
real client, real credentials, and a server that refuses what BigQuery refuses; every
statement is also analysed by ZetaSQL. The double's own rules are tested in
``test_bigquery_double.py``."""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import nullcontext
from datetime import timedelta

import pytest
import sqlglot
from google.cloud import bigquery as bq

from selfheal_dagster.adapters.league import League
from selfheal_dagster.adapters.settings import DEFAULT_MAX_BYTES_BILLED, DEFAULT_SEED
from selfheal_dagster.adapters.warehouse import WarehouseError
from selfheal_dagster.adapters.warehouse.bigquery import BigQueryWarehouse
from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.core import history
from selfheal_dagster.core.checks import CHECKS
from selfheal_dagster.defs.resources import verified
from selfheal_dagster.tables import BY_NAME, LOADED_AT, TABLES, execution_order, in_phase
from selfheal_dagster_tests import prod_scenario
from selfheal_dagster_tests.bigquery_double import unpruned
from selfheal_dagster_tests.support import (
    BQ_LOCATION,
    BQ_PROJECT,
    PROD_CID,
    PROD_RUN_ID,
    bigquery_double,
    bigquery_warehouse,
    bound,
)

DAY = prod_scenario.DAY
BOX = prod_scenario.BOX
CACHE = BY_NAME["player_daily_cache"]
RUN_ID, CID = PROD_RUN_ID, PROD_CID


@pytest.fixture
def prod(prod_day):
    return prod_day


def test_the_prod_scenario_sends_n_jobs_and_none_is_refused(prod):
    jobs, refused = prod.received, prod.refused
    print(f"{len(jobs)} jobs, {len(refused)} refused")
    assert refused == [], "\n".join(f"{j.rule}: {j.error['message']}" for j in refused)
    assert len(jobs) >= 60
    kinds = {j.config.get("query", {}).get("query", "")[:6] for j in jobs if j.kind == "query"}
    assert {"CREATE", "MERGE ", "SELECT", "DELETE", "UPDATE", "ALTER ", "DROP T"} <= kinds
    assert sum(j.kind == "load" for j in jobs) == 8  # 4 tables x (a staged range, one date)


def test_every_read_of_a_partitioned_table_is_pruned_by_a_parameter(prod):
    """The syntax tree of every statement: each reference to a partitioned table that is
    read (a SELECT's FROM or JOIN, a DELETE's or a MERGE's target) has a filter on its
    partition column bounded by query parameters."""
    partitioned = {(t.dataset, t.name): t.partition_column for t in TABLES}
    judged = 0
    for job in prod.received:
        if job.kind != "query":
            continue
        assert unpruned(job.sql, partitioned, params_only=True) == [], job.sql
        judged += sum(
            (tb.db, tb.name) in partitioned
            for tree in sqlglot.parse(job.sql, read="bigquery")
            for tb in tree.find_all(sqlglot.exp.Table)
        )
    assert judged >= 80  # each processor reads two to six tables, and it runs twice


def test_the_judge_finds_a_read_the_product_does_not_prune():
    """The same walk on the statements this product sent before: a join to the date spine
    does not prune, nor does a filter on another column."""
    partitioned = {("nba_raw", "nbac_schedule"): "game_date"}
    spine = (
        "WITH spine AS (SELECT d FROM UNNEST(@days) AS d) SELECT x.* FROM "
        "`p.nba_raw.nbac_schedule` AS x JOIN spine AS s ON x.game_date = s.d"
    )
    other = "SELECT * FROM `p.nba_raw.nbac_schedule` WHERE game_id = @g"
    literal = "SELECT * FROM `p.nba_raw.nbac_schedule` WHERE game_date = DATE '2026-01-20'"
    assert unpruned(spine, partitioned) == ["nba_raw.nbac_schedule"]
    assert unpruned(other, partitioned) == ["nba_raw.nbac_schedule"]
    assert unpruned(literal, partitioned) == []  # BigQuery prunes on a constant…
    assert unpruned(literal, partitioned, params_only=True) == ["nba_raw.nbac_schedule"]


def test_every_job_carries_labels_a_byte_cap_and_a_timeout(prod):
    for job in prod.received:
        assert job.labels == {
            "app": "selfheal",
            "component": "asset",
            "asset": "x",
            "dagster_run_id": RUN_ID,
            "correlation_id": CID,
            "attempt": "2",
        }
        assert int(job.config["jobTimeoutMs"]) == 900_000
        if job.kind == "query":
            assert int(job.config["query"]["maximumBytesBilled"]) == DEFAULT_MAX_BYTES_BILLED


def test_tables_require_a_partition_filter_and_datasets_are_in_the_location(prod):
    assert set(prod.datasets.values()) == {BQ_LOCATION}
    for table in TABLES:
        state = prod.tables[(table.dataset, table.name)]
        assert state.partition == table.partition_column and state.require_filter
        assert state.clustering == tuple(table.cluster_by)
        assert {f.mode for f in state.fields} == {"NULLABLE"}  # a query's result fits
    log = prod.tables[(history.DATASET, history.TABLE)]
    assert log.partition is None and log.clustering == ("correlation_id", "target_date")
    assert not any(name.startswith("_stage_") for _, name in prod.tables)  # dropped


def test_phase4_on_bigquery_computes_duckdbs_rows(prod, tmp_path):
    """The MERGE writes of the scenario leave, per processor, the rows DuckDB computes from
    the same inputs (the gap was punched in box scores after Phase 4 ran)."""
    league = League(DEFAULT_SEED)
    local = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    prod_scenario.load_phase2(local, league, prod_scenario.history_days())
    for table in execution_order(in_phase(4)):
        local.run_processor(table, prod_scenario.RANGE)
    for table in execution_order(in_phase(4)):
        mine = prod.rows(table.dataset, table.name)
        theirs = local.query(f"SELECT * FROM {local.ref(table)}")
        assert mine and same(mine, theirs), table.name


def same(a: list[dict], b: list[dict]) -> bool:
    def norm(row: dict) -> tuple:
        return tuple(
            (k, float(f"{v:.9g}") if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in sorted(row.items())
            if k != LOADED_AT
        )

    return sorted(map(norm, a), key=repr) == sorted(map(norm, b), key=repr)


def test_no_value_is_ever_formatted_into_sql(prod):
    for job in prod.received:
        assert "2026-01-" not in job.sql and "20260120" not in job.sql, job.sql[:200]
    wh = BigQueryWarehouse(BQ_PROJECT, "EU", client=lambda: nullcontext(None))
    evil = "2026-01-20'; DROP TABLE x; --"
    for call in (
        lambda: wh.replace_partition(BOX, evil, []),
        lambda: wh.run_processor(BOX, [evil]),
        lambda: wh.window_stats([BOX], evil, DAY),
        lambda: wh.punch_gap(BOX, evil),
        lambda: wh.history(day=evil),
    ):
        with pytest.raises(WarehouseError, match="expected a date"):
            call()
    with pytest.raises(WarehouseError, match="refusing BigQuery project"):
        BigQueryWarehouse("x`; DROP", "US", client=lambda: nullcontext(None))
    with pytest.raises(WarehouseError, match="refusing BigQuery location"):
        BigQueryWarehouse(BQ_PROJECT, "EU'); DROP", client=lambda: nullcontext(None))


# --- writes that never race ---------------------------------------------------------------


@pytest.fixture(scope="module")
def history_double(tmp_path_factory, zetasql):
    """One double with the Phase 2 history loaded, shared by the tests of writes and jobs."""
    with bigquery_double(tmp_path_factory.mktemp("bqh"), zetasql) as double:
        with bigquery_warehouse() as wh:
            prod_scenario.init_with_history(wh)
        yield double


@pytest.fixture
def loaded(history_double):
    """The shared double, its record of jobs (and of gates, cancels, planted conflicts and
    write times) started afresh for this test."""
    double = history_double
    double.order.clear()
    double.holds.clear()
    yield double
    for _, gate in double.gates:
        gate.set()
    double.gates.clear()
    double.cancels.clear()
    double.conflicts.clear()
    double._planted.clear()
    double.mutation_seconds = 0.0


def test_two_overlapping_ranged_writes_of_one_table_never_mutate_it_at_once(loaded):
    """Two heals of player_daily_cache for different dates, at the same moment: each is one
    MERGE, which BigQuery queues behind the other instead of cancelling it (a transaction
    would be cancelled: test_bigquery_double.py). Both succeed, so neither run fails and no
    heal attempt is spent; their holds of the table do not overlap."""
    loaded.mutation_seconds = 0.5  # every write takes half a second: they overlap
    spans = [[DAY - timedelta(days=5), DAY - timedelta(days=4)], [DAY - timedelta(days=1), DAY]]
    results, errors = {}, []

    def heal(i: int) -> None:
        try:
            with bigquery_warehouse("asset", asset=CACHE.name, run_id=f"run-{i}") as wh:
                results[i] = wh.run_processor(CACHE, spans[i])
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=heal, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(bound(120))
    assert errors == [] and set(results) == {0, 1}
    merges = [
        (start, end)
        for table, job, start, end in loaded.holds
        if table == (CACHE.dataset, CACHE.name) and "MERGE" in loaded.jobs[job].sql
    ]
    assert len(merges) == 2
    (a0, a1), (b0, b1) = sorted(merges)
    assert a1 <= b0, "two writes of one table held it at once"
    submitted = sorted(j.created.timestamp() for j in _merges(loaded, CACHE))
    assert submitted[1] - submitted[0] < 0.5  # they were sent together: the second waited
    assert all(results[i].by_day.keys() == set(spans[i]) for i in range(2))


def test_a_concurrent_update_that_still_happens_is_retried_within_the_step(loaded):
    loaded.conflicts[(CACHE.dataset, CACHE.name)] = 2
    slept = []
    with bigquery_warehouse() as wh:
        wh._sleep = slept.append
        written = wh.run_processor(CACHE, [DAY])
    assert written.rows > 0 and len(slept) == 2  # two conflicts, two waits, then success
    failed = [j for j in loaded.refused if j.rule == "dml_conflict"]
    assert len(failed) == 2


def test_a_transient_bigquery_error_is_retried_as_a_new_job(loaded):
    loaded.fail_next(r"^MERGE .*player_daily_cache", "backendError", "Backend error.", times=1)
    slept = []
    with bigquery_warehouse() as wh:
        wh._sleep = slept.append
        written = wh.run_processor(CACHE, [DAY])
    merges = _merges(loaded, CACHE)
    assert written.rows > 0 and len(slept) == 1
    assert [m.error["reason"] if m.error else "ok" for m in merges] == ["backendError", "ok"]
    assert merges[0].id != merges[1].id  # a new job, under a new id


# --- a job never outlives its step ------------------------------------------------------


def test_an_interrupted_step_cancels_its_job_and_writes_nothing(loaded, request):
    """What a terminated run does to its step (Dagster raises an interrupt in it): the
    BigQuery job it waits on is cancelled, and the partition keeps its rows."""
    loaded.gate(r"^MERGE .*player_daily_cache")
    before = loaded.rows(CACHE.dataset, CACHE.name)
    # A real SIGINT, as a terminated run's worker gets a signal: it interrupts the blocking
    # HTTP call the step waits in. Sent once BigQuery holds the MERGE, and to the main
    # thread: a signal the kernel hands another thread does not wake a blocked read.
    main = threading.main_thread().ident

    def interrupt() -> None:
        deadline = time.monotonic() + bound(60)
        while not _merges(loaded, CACHE) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # into the wait for its result
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    # Python's own handler, as a run worker's step has: pytest started in the background
    # (``make test &``, a CI step) inherits SIGINT ignored, and the SIGINT would be lost.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    with pytest.raises(KeyboardInterrupt), bigquery_warehouse() as wh:
        wh.run_processor(CACHE, [DAY])
        time.sleep(bound(30))  # not reached: the interrupt lands while the job runs
    [merge] = _merges(loaded, CACHE)
    assert loaded.cancels == [merge.id]
    assert loaded.cancelled_by[merge.id] == "its own client"
    merge.done.wait(bound(10))
    assert merge.error["reason"] == "stopped"
    assert loaded.rows(CACHE.dataset, CACHE.name) == before


def test_a_job_past_its_timeout_is_cancelled_with_one_line(loaded):
    loaded.gate(r"^MERGE .*player_daily_cache")
    wh = BigQueryWarehouse(BQ_PROJECT, BQ_LOCATION, client=_client, timeout_seconds=1.0)
    with pytest.raises(WarehouseError, match=r"still running after 1s; cancelled") as info, wh:
        wh.run_processor(CACHE, [DAY])
    assert "\n" not in str(info.value)
    [merge] = _merges(loaded, CACHE)
    assert loaded.cancels == [merge.id]


def _merges(double, table):
    return [j for j in double.received if j.sql.startswith(f"MERGE {_ref(table)}")]


def _ref(table) -> str:
    return f"`{BQ_PROJECT}.{table.dataset}.{table.name}`"


def _client():
    from dagster_gcp import BigQueryResource

    return BigQueryResource(project=BQ_PROJECT, location=BQ_LOCATION).get_client()


def test_the_jobs_of_a_dead_run_are_found_by_label_and_cancelled(loaded):
    """A run killed or reaped before its step could cancel: every job labelled with its run
    id is cancelled (the run-status sensors of defs/reaper.py call this)."""
    gate = loaded.gate(r"^MERGE .*player_daily_cache")
    done = threading.Event()

    def dead_run() -> None:
        with bigquery_warehouse("asset", run_id=RUN_ID) as wh, pytest.raises(WarehouseError):
            wh.run_processor(CACHE, [DAY])
        done.set()

    threading.Thread(target=dead_run, daemon=True).start()
    end = time.monotonic() + bound(30)
    while not _merges(loaded, CACHE):
        assert time.monotonic() < end
        time.sleep(0.05)
    with bigquery_warehouse("janitor") as wh:
        assert wh.cancel_run_jobs("other-run") == []
        [cancelled] = wh.cancel_run_jobs(RUN_ID)
    [merge] = _merges(loaded, CACHE)
    assert cancelled == merge.id and loaded.cancels == [merge.id]
    assert loaded.cancelled_by[merge.id] == "another client"
    gate.set()
    assert done.wait(bound(30))  # the step sees its job stopped, as an error


# --- rows, not metadata -----------------------------------------------------------------


def test_a_writes_checks_count_rows_while_partition_metadata_lags(tmp_path, zetasql):
    """INFORMATION_SCHEMA.PARTITIONS lags (here an hour) and has no row for an empty
    partition; the in-run checks, the input guard and the read-back count the rows."""
    league = League(DEFAULT_SEED)
    with bigquery_double(tmp_path, zetasql, lag_seconds=3600), bigquery_warehouse() as wh:
        wh.ensure_tables()
        written = wh.replace_partition(BOX, DAY, league.feed(BOX.feed, DAY))
        meta = wh.window_stats([BOX], DAY, DAY, metadata=True)[BOX.name]
        rows = wh.window_stats([BOX], DAY, DAY)[BOX.name]
        back = verified(BOX, DAY, wh)
        empty = verified(BOX, DAY - timedelta(days=1), wh)
    assert meta == {}  # not yet in the metadata
    assert rows[DAY].rows == written.rows == back.rows > 0
    assert abs((rows[DAY].loaded_at - written.loaded_at).total_seconds()) < 1e-3
    assert back.loaded_at == rows[DAY].loaded_at
    assert (empty.rows, empty.loaded_at) == (0, None)  # nothing invented


def test_the_sweep_reads_the_watched_dates_in_the_tables_while_metadata_lags(tmp_path, zetasql):
    from selfheal_dagster.core.dates import now_utc
    from selfheal_dagster.defs.sweep import sweep_outcomes

    league = League(DEFAULT_SEED)
    with (
        bigquery_double(tmp_path, zetasql, lag_seconds=3600) as double,
        bigquery_warehouse() as wh,
    ):
        wh.ensure_tables()
        for table in in_phase(2):
            wh.replace_partition(table, DAY, league.feed(table.feed, DAY))
        targets = [(t, DAY) for t in in_phase(2)]
        calendar = lambda day: len(league.games_on(day))  # noqa: E731
        found = sweep_outcomes(wh, targets, now_utc(), calendar)
    assert len(found) == len(targets) * len(CHECKS)
    assert [o for o in found if not o.passed] == []
    sent = [j.sql for j in double.received if j.sql.startswith(("SELECT", "WITH"))]
    metadata = [s for s in sent if "INFORMATION_SCHEMA" in s]
    assert len(metadata) == len({t.dataset for t in TABLES})  # the history: per dataset
    assert len(sent) - len(metadata) == len(TABLES)  # the watched dates: per table


def test_one_client_per_warehouse_closed_at_the_end(bigquery, monkeypatch):
    closed = []
    original = bq.Client.close

    def close(self):
        closed.append(self)
        return original(self)

    monkeypatch.setattr(bq.Client, "close", close)
    tokens_before = len(bigquery.tokens)
    with bigquery_warehouse() as wh:
        wh.ensure_tables()
        for _ in range(3):
            wh.partition_stats(BOX, DAY, DAY)
        first = wh.client()
    assert closed == [first]
    assert len(bigquery.tokens) - tokens_before == 1  # one client, one set of credentials
