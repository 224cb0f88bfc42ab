"""The BigQuery warehouse: production, behind the same interface as DuckDB.

Used the way BigQuery's documentation asks:

- **Writes never race.** Every replacement of dates that runs SQL is ONE ``MERGE`` statement
  (``ON FALSE``: delete the dates' rows, insert the new ones; dbt's ``insert_overwrite``
  idiom), atomic on its own. BigQuery queues DML that mutates a table while another DML
  statement runs on it, where it cancels one of two multi-statement transactions. A Phase 2
  date is one load job into the partition decorator ``table$YYYYMMDD`` with WRITE_TRUNCATE;
  a Phase 2 range is one load into a staging table, then one MERGE. A write that still meets
  a concurrent update is retried here, within the step, so it never spends a heal attempt.
- **Reads prune.** Tables are created with ``require_partition_filter``; every read of one
  filters its partition column by query parameters (the Phase 4 SQL too).
- **Guard rails.** Every job carries labels (component, asset, run, correlation ID, attempt),
  ``maximum_bytes_billed`` (queries) and a timeout, both at BigQuery (``job_timeout_ms``) and
  here; a job still running when its step is interrupted, or at the timeout, is cancelled.
- **Rows, not metadata, for a write's checks.** ``partition_stats`` counts rows and reads
  ``MAX(_loaded_at)`` in the table (one pruned query); ``INFORMATION_SCHEMA.PARTITIONS``
  (commit times, lagging, no row for an empty partition) is read only by sweeps.
- **One client per warehouse object**, opened on first use and closed by ``close()``.
- Values are always query parameters; identifiers come only from the registry and are
  validated and backtick-quoted. The Phase 4 SQL is the DuckDB source, transpiled by sqlglot.

Imported only in production: it pulls in the Google client libraries.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

import sqlglot
from google.cloud import bigquery

from selfheal_dagster.adapters.warehouse import base
from selfheal_dagster.adapters.warehouse.base import PartitionStats, WarehouseError, WriteResult
from selfheal_dagster.core import history
from selfheal_dagster.core.dates import now_utc
from selfheal_dagster.core.errors import error_line
from selfheal_dagster.core.job_context import CLI, JobContext, label
from selfheal_dagster.tables import BY_NAME, LOADED_AT, TABLES, Table

log = logging.getLogger("selfheal.bigquery")

TYPES = {
    "DATE": "DATE",
    "STRING": "STRING",
    "INT": "INT64",
    "FLOAT": "FLOAT64",
    "BOOL": "BOOL",
    "TIMESTAMP": "TIMESTAMP",
}
# What tables.get reports for each of them (BigQuery's legacy names).
REPORTED = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}
_IDENT = re.compile(r"^([a-z_][a-z0-9_]*|INFORMATION_SCHEMA|PARTITIONS)$")
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_LOCATION = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}$")
_CONFLICT = re.compile(r"concurrent update|could not serialize access", re.I)
# BigQuery's job errors that a new job may not meet (its troubleshooting page: retry).
TRANSIENT_REASONS = frozenset(
    {"backendError", "internalError", "rateLimitExceeded", "jobRateLimitExceeded"}
)
RETRY_ATTEMPTS = 5
RETRY_BACKOFF_SECONDS = 2.0


def quote(project: str, *parts: str) -> str:
    """A backtick-quoted path whose every part was validated (never user text)."""
    if not _PROJECT.match(project):
        raise WarehouseError(f"refusing BigQuery project id '{project}'")
    for part in parts:
        if not _IDENT.match(part):
            raise WarehouseError(f"refusing identifier '{part}': expected lower_snake_case")
    return "`" + ".".join((project, *parts)) + "`"


def _check_day(day: object) -> date:
    if not isinstance(day, date) or isinstance(day, datetime):
        raise WarehouseError(f"refusing partition value {day!r}: expected a date")
    return day


def _param(name: str, value: Any) -> bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter:
    if isinstance(value, bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter):
        return value
    if isinstance(value, list | tuple):
        values = list(value)
        kind = "DATE" if values and all(isinstance(v, date) for v in values) else "STRING"
        return bigquery.ArrayQueryParameter(name, kind, values)
    kind = (
        "BOOL"
        if isinstance(value, bool)
        else "TIMESTAMP"
        if isinstance(value, datetime)
        else "DATE"
        if isinstance(value, date)
        else "INT64"
        if isinstance(value, int)
        else "FLOAT64"
        if isinstance(value, float)
        else "STRING"
    )
    return bigquery.ScalarQueryParameter(name, kind, value)


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _used(sql: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters ``sql`` names (``@d`` is not ``@days``)."""
    return {k: v for k, v in (params or {}).items() if re.search(rf"@{k}\b", sql)}


def _retriable(exc: BaseException) -> str | None:
    """Why a failed job is worth a new one (None: it is not): a concurrent update of the
    table, or a transient error of BigQuery's."""
    if _CONFLICT.search(_message(exc)):
        return "a concurrent update"
    errors = getattr(exc, "errors", None) or []
    reason = errors[0].get("reason") if errors and isinstance(errors[0], dict) else None
    return f"BigQuery's transient {reason}" if reason in TRANSIENT_REASONS else None


def _message(exc: BaseException) -> str:
    """BigQuery's own words: the API error's message, not the request line around it."""
    text = getattr(exc, "message", None) or str(exc)
    return error_line(RuntimeError(text))


@cache
def _transpiled(project: str, name: str) -> str:
    table = BY_NAME[name]
    # One quoted identifier per table (`project.dataset.table`), as quote() writes them.
    refs = {n: f'"{project}.{t.dataset}.{n}"' for n, t in BY_NAME.items()}
    duckdb_sql = base.processor_sql(table).format_map(refs)
    return sqlglot.transpile(duckdb_sql, read="duckdb", write="bigquery", comments=False)[0]


def schema(table: Table) -> list[bigquery.SchemaField]:
    """The table's columns as BigQuery holds them: every one NULLABLE, so a query's result
    (whose columns are always NULLABLE) can be written into it."""
    fields = [bigquery.SchemaField(c.name, TYPES[c.type]) for c in table.columns]
    return [*fields, bigquery.SchemaField(LOADED_AT, "TIMESTAMP")]


@dataclass(frozen=True)
class Statement:
    """A statement the warehouse sends: its name, SQL, parameters for one date, the tables
    (asset keys) it touches; ``heal``: read by a one-date heal."""

    name: str
    sql: str
    params: dict[str, Any]
    tables: tuple[str, ...] = ()
    heal: bool = False


@dataclass(frozen=True)
class Shape:
    """How a table is declared in BigQuery, as tables.get reports it."""

    partition: str | None
    clustering: tuple[str, ...]
    require_filter: bool
    columns: dict[str, tuple[str, str]]  # name -> (type, mode)


def expected_shape(table: Table) -> Shape:
    return Shape(
        partition=table.partition_column,
        clustering=tuple(table.cluster_by),
        require_filter=True,
        columns={
            f.name: (REPORTED.get(f.field_type, f.field_type), "NULLABLE") for f in schema(table)
        },
    )


def shape_problems(table: Table, found: Shape) -> list[str]:
    """What differs between a table in BigQuery and the registry, each with the fix."""
    want, ref = expected_shape(table), f"{table.dataset}.{table.name}"
    out = []
    if found.partition != want.partition:
        out.append(
            f"{ref} is partitioned by {found.partition or 'nothing'}, not {want.partition}: "
            f"recreate it with PARTITION BY {want.partition} (copy the rows over)"
        )
    if not found.require_filter:
        out.append(
            f"{ref} does not require a partition filter: ALTER TABLE {ref} SET OPTIONS "
            "(require_partition_filter = TRUE)"
        )
    for name, (kind, _) in want.columns.items():
        have = found.columns.get(name)
        if have is None:
            out.append(f"{ref} lacks column {name}: ALTER TABLE {ref} ADD COLUMN {name} {kind}")
        elif have[0] != kind:
            out.append(f"{ref}.{name} is {have[0]}, not {kind}: the registry and table disagree")
        elif have[1] == "REQUIRED":
            out.append(
                f"{ref}.{name} is REQUIRED, which a query's result cannot fill: ALTER TABLE "
                f"{ref} ALTER COLUMN {name} DROP NOT NULL"
            )
    if found.clustering != want.clustering:
        have = ", ".join(found.clustering) or "nothing"
        out.append(
            f"{ref} is clustered by {have}, not {', '.join(want.clustering)}: ALTER TABLE "
            f"{ref} SET OPTIONS is not enough; update its clustering with bq update "
            f"--clustering_fields={','.join(want.clustering)}"
        )
    return out


HISTORY_CLUSTERING = ("correlation_id", "target_date")


def history_problems(found: Shape) -> list[str]:
    """What differs between the heal history in BigQuery and the table this version writes."""
    ref = f"{history.DATASET}.{history.TABLE}"
    out = []
    for name, kind in history.COLUMNS.items():
        want = REPORTED.get(TYPES[kind], TYPES[kind])
        have = found.columns.get(name)
        if have is None:
            out.append(f"{ref} lacks column {name}: run selfheal init (it adds it)")
        elif have[0] != want:
            out.append(f"{ref}.{name} is {have[0]}, not {want}")
    if found.require_filter:
        out.append(
            f"{ref} requires a partition filter, but is read by correlation ID: ALTER TABLE "
            f"{ref} SET OPTIONS (require_partition_filter = FALSE)"
        )
    return out


class BigQueryWarehouse(base.Warehouse):
    kind = "bigquery"
    metadata_is_exact = False

    def __init__(
        self,
        project: str,
        location: str | None,
        client: Callable[[], AbstractContextManager[bigquery.Client]],
        *,
        job: JobContext = CLI,
        max_bytes_billed: int = 10 * 1024**3,
        timeout_seconds: float = 900.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        quote(project)  # validates
        if location is not None and not _LOCATION.match(location):
            raise WarehouseError(f"refusing BigQuery location '{location}'")
        self.project = project
        self.location = location or "US"
        self.job = job
        self.max_bytes_billed = int(max_bytes_billed)
        self.timeout_seconds = float(timeout_seconds)
        self._open = client
        self._sleep = sleep
        self._stack: ExitStack | None = None
        self._client: bigquery.Client | None = None

    # --- the client ---------------------------------------------------------------------------

    def client(self) -> bigquery.Client:
        """This object's one client, opened on first use."""
        if self._client is None:
            stack = ExitStack()
            try:
                self._client = stack.enter_context(self._open())
            except Exception as exc:
                stack.close()
                raise WarehouseError(f"cannot reach BigQuery: {_message(exc)}") from exc
            self._stack = stack
        return self._client

    def close(self) -> None:
        client, stack = self._client, self._stack
        self._client, self._stack = None, None
        if client is not None:
            with suppress(Exception):
                client.close()
        if stack is not None:
            stack.close()

    # --- statements -------------------------------------------------------------------------

    def ref(self, table: Table) -> str:
        return quote(self.project, table.dataset, table.name)

    def _history_ref(self) -> str:
        return quote(self.project, history.DATASET, history.TABLE)

    def _decorated(self, table: Table, day: date) -> str:
        """``project.dataset.table$YYYYMMDD``: a job's destination, one partition."""
        quote(self.project, table.dataset, table.name)
        return f"{self.project}.{table.dataset}.{table.name}${_check_day(day):%Y%m%d}"

    def ddl(self, tables: Sequence[Table] = TABLES) -> list[str]:
        """Datasets (in the configured location) and tables (partitioned, clustered, requiring
        a partition filter) from the registry, and the heal history."""
        out = [
            f"CREATE SCHEMA IF NOT EXISTS {quote(self.project, dataset)} "
            f"OPTIONS (location = '{self.location}')"
            for dataset in sorted({t.dataset for t in tables} | {history.DATASET})
        ]
        for t in tables:
            cols = [f"{c.name} {TYPES[c.type]}" for c in t.columns]
            cols.append(f"{LOADED_AT} TIMESTAMP")
            for name in [t.partition_column, *t.cluster_by]:
                quote(self.project, name)
            sql = (
                f"CREATE TABLE IF NOT EXISTS {self.ref(t)} ({', '.join(cols)}) "
                f"PARTITION BY {t.partition_column}"
            )
            if t.cluster_by:
                sql += f" CLUSTER BY {', '.join(t.cluster_by)}"
            out.append(sql + " OPTIONS (require_partition_filter = TRUE)")
        # The history is small (a few thousand records a season) and read by correlation ID
        # as often as by date: clustered, not partitioned (BigQuery advises clustering for
        # tables under about 10 GB).
        cols = ", ".join(f"{c} {TYPES[k]}" for c, k in history.COLUMNS.items())
        out.append(
            f"CREATE TABLE IF NOT EXISTS {self._history_ref()} ({cols}) "
            f"CLUSTER BY {', '.join(HISTORY_CLUSTERING)}"
        )
        # A history table from an older version gains the columns added since.
        added = ", ".join(
            f"ADD COLUMN IF NOT EXISTS {c} {TYPES[history.COLUMNS[c]]}" for c in history.ADDED
        )
        out.append(f"ALTER TABLE {self._history_ref()} {added}")
        return out

    def phase4_sql(self, table: Table) -> str:
        """The processor's SELECT, transpiled from the one DuckDB-dialect source."""
        return _transpiled(self.project, table.name)

    def replace_sql(self, table: Table, select: str) -> str:
        """ONE MERGE that makes ``select``'s rows the whole content of the dates ``@days``:
        atomic, queued behind other DML on the table instead of cancelled, and pruned by
        ``@days`` on the target (dbt's insert_overwrite statement)."""
        cols = ", ".join(table.column_names)
        values = ", ".join(f"source.{c}" for c in [*table.column_names, LOADED_AT])
        return (
            f"MERGE {self.ref(table)} AS target USING "
            f"(SELECT {cols}, @loaded_at AS {LOADED_AT} FROM ({select}) AS processed) AS source "
            "ON FALSE "
            f"WHEN NOT MATCHED BY SOURCE AND target.{table.partition_column} IN UNNEST(@days) "
            "THEN DELETE "
            f"WHEN NOT MATCHED THEN INSERT ({cols}, {LOADED_AT}) VALUES ({values})"
        )

    # --- running ----------------------------------------------------------------------------

    def _labels(self) -> dict[str, str]:
        return self.job.labels()

    def query_config(self, params: Mapping[str, Any] | None = None, **config: Any):
        """A query job's configuration: its parameters, labels, byte cap and timeout."""
        return bigquery.QueryJobConfig(
            query_parameters=[_param(k, v) for k, v in (params or {}).items()],
            labels=self._labels(),
            maximum_bytes_billed=self.max_bytes_billed,
            job_timeout_ms=int(self.timeout_seconds * 1000),
            **config,
        )

    def _load_config(self, table: Table, **config: Any) -> bigquery.LoadJobConfig:
        return bigquery.LoadJobConfig(
            schema=schema(table),
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            labels=self._labels(),
            job_timeout_ms=int(self.timeout_seconds * 1000),
            **config,
        )

    def _run(self, what: str, start: Callable[[bigquery.Client, str], Any]) -> tuple[Any, Any]:
        """Start a job under an id chosen here, and wait for it, bounded. A concurrent update
        or a transient BigQuery error is retried here, as a new job (it costs no heal
        attempt); a timeout or an interrupted step (a terminated run) cancels the job by its
        id, even when the interrupt lands while the job is being inserted."""
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            self.statements += 1
            job_id = f"selfheal_{label(self.job.component)}_{uuid.uuid4().hex}"
            try:
                job = start(self.client(), job_id)
                return job, job.result(timeout=self.timeout_seconds)
            except concurrent.futures.TimeoutError:
                self._cancel(job_id)
                raise WarehouseError(
                    f"{what}: BigQuery job {job_id} still running after "
                    f"{self.timeout_seconds:g}s; cancelled"
                ) from None
            except Exception as exc:
                why = _retriable(exc)
                if why is None or attempt == RETRY_ATTEMPTS:
                    raise WarehouseError(f"{what}: {_message(exc)}") from exc
                wait = RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1)
                log.warning(
                    "%s: %s (attempt %d/%d); retrying in %.0fs",
                    what,
                    why,
                    attempt,
                    RETRY_ATTEMPTS,
                    wait,
                )
                self._sleep(wait)
            except BaseException:  # the step is interrupted: the run was terminated
                self._cancel(job_id)
                raise
        raise AssertionError("unreachable")

    def _cancel(self, job_id: str) -> None:
        if self._client is None:
            return
        with suppress(Exception):
            self._client.cancel_job(job_id, location=self.location)
            log.warning("cancelled BigQuery job %s", job_id)

    def _query(
        self, sql: str, params: Mapping[str, Any] | None = None, what: str = "BigQuery job"
    ) -> Any:
        used = _used(sql, params)
        config = self.query_config(used)
        return self._run(
            what,
            # job_retry=None: a job under our own id is retried here, as a new job
            lambda c, i: c.query(
                sql, job_config=config, location=self.location, job_id=i, job_retry=None
            ),
        )

    def dry_run(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """Bytes a statement would process: BigQuery's free dry run, which also checks its
        SQL, names and permissions (raises ``WarehouseError`` with BigQuery's message)."""
        used = _used(sql, params)
        config = self.query_config(used, dry_run=True, use_query_cache=False)
        self.statements += 1
        try:
            job = self.client().query(sql, job_config=config, location=self.location)
        except Exception as exc:
            raise WarehouseError(_message(exc)) from exc
        return int(job.total_bytes_processed or 0)

    def ensure_tables(self, tables: Sequence[Table] = TABLES) -> None:
        for sql in self.ddl(tables):
            self._query(sql, what="create datasets and tables")

    def replace_partition(
        self, table: Table, day: date, rows: Sequence[Mapping[str, Any]]
    ) -> WriteResult:
        _check_day(day)
        self.check_rows(table, day, rows)
        loaded_at = now_utc()
        if not rows:  # nothing to load: one DML statement empties the partition
            self._query(self._empty_sql(table), {"d": day}, what=f"empty {table.key} {day}")
            return WriteResult(rows=0, loaded_at=loaded_at)
        payload = [
            {**{c: _json(row[c]) for c in table.column_names}, LOADED_AT: _json(loaded_at)}
            for row in rows
        ]
        config = self._load_config(
            table,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            time_partitioning=bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=table.partition_column
            ),
            clustering_fields=list(table.cluster_by) or None,
        )
        self._run(
            f"replace {table.key} {day} (the previous rows stay)",
            lambda c, i: c.load_table_from_json(
                payload,
                self._decorated(table, day),
                job_config=config,
                location=self.location,
                job_id=i,
            ),
        )
        return WriteResult(rows=len(rows), loaded_at=loaded_at)

    def _staging(self, table: Table) -> str:
        """A run-private staging table next to ``table`` (validated parts, random suffix)."""
        name = f"_stage_{table.name}_{uuid.uuid4().hex[:12]}"
        return quote(self.project, table.dataset, name)

    def _counted(self, table: Table, days: Sequence[date]) -> dict[date, int]:
        pc = table.partition_column
        _, rows = self._query(
            f"SELECT {pc} AS day, COUNT(*) AS n FROM {self.ref(table)} "
            f"WHERE {pc} IN UNNEST(@days) GROUP BY {pc}",
            {"days": list(days)},
            what=f"count {table.key}",
        )
        found = {r["day"]: int(r["n"]) for r in rows}
        return {day: found.get(day, 0) for day in days}

    def replace_partitions(
        self, table: Table, rows_by_day: Mapping[date, Sequence[Mapping[str, Any]]]
    ) -> WriteResult:
        """A range: one load into a staging table (it expires after a day if the drop never
        runs), then one MERGE of the whole range, then the drop."""
        days = sorted(_check_day(d) for d in rows_by_day)
        if len(days) == 1:
            return self.replace_partition(table, days[0], rows_by_day[days[0]])
        for day in days:
            self.check_rows(table, day, rows_by_day[day])
        loaded_at = now_utc()
        staging = self._staging(table)
        payload = [
            {**{c: _json(row[c]) for c in table.column_names}, LOADED_AT: _json(loaded_at)}
            for day in days
            for row in rows_by_day[day]
        ]
        span = f"{table.key} {days[0]}..{days[-1]}"
        config = self._load_config(
            table, write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE
        )
        self._run(
            f"stage {span} (nothing replaced)",
            lambda c, i: c.load_table_from_json(
                payload, staging.strip("`"), job_config=config, location=self.location, job_id=i
            ),
        )
        try:
            self._query(
                f"ALTER TABLE {staging} SET OPTIONS "
                "(expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 1 DAY))",
                what=f"expire the staging table of {span}",
            )
            cols = ", ".join(table.column_names)
            self._query(
                self.replace_sql(table, f"SELECT {cols} FROM {staging}"),
                {"days": days, "loaded_at": loaded_at},
                what=f"replace {span} (the previous rows stay)",
            )
        finally:
            with suppress(WarehouseError):
                self._query(f"DROP TABLE IF EXISTS {staging}", what=f"drop {staging}")
        by_day = {day: len(rows_by_day[day]) for day in days}
        return WriteResult(rows=sum(by_day.values()), loaded_at=loaded_at, by_day=by_day)

    def run_processor(self, table: Table, days: Sequence[date]) -> WriteResult:
        """One MERGE computes and replaces every date of ``days`` (one or a range)."""
        params = base.processor_params(table, [_check_day(d) for d in days])
        loaded_at = now_utc()
        spine = params["days"]
        span = str(spine[0]) if len(spine) == 1 else f"{spine[0]}..{spine[-1]}"
        self._query(
            self.replace_sql(table, self.phase4_sql(table)),
            {**params, "loaded_at": loaded_at},
            what=f"processor {table.key} {span} (the previous rows stay)",
        )
        by_day = self._counted(table, spine)
        return WriteResult(rows=sum(by_day.values()), loaded_at=loaded_at, by_day=by_day)

    def _empty_sql(self, table: Table) -> str:
        return f"DELETE FROM {self.ref(table)} WHERE {table.partition_column} = @d"

    def _stats_sql(self, table: Table) -> str:
        # (Not "AS at" in it: AT is a reserved keyword in BigQuery, found by ZetaSQL.)
        return base.stats_sql(table, self.ref(table), "@start", "@end")

    def _metadata_sql(self, dataset: str) -> str:
        return (
            "SELECT table_name, partition_id, total_rows, last_modified_time "
            f"FROM {quote(self.project, dataset, 'INFORMATION_SCHEMA', 'PARTITIONS')} "
            "WHERE table_name IN UNNEST(@tables) "
            "AND (partition_id IS NULL OR partition_id BETWEEN @first AND @last)"
        )

    def _gap_sql(self, table: Table) -> str:
        """Keep the first ``@keep`` rows of the date ``@d`` (in column order), drop the rest."""
        order = ", ".join(table.column_names)
        return self.replace_sql(
            table,
            f"SELECT * FROM {self.ref(table)} WHERE {table.partition_column} = @d "
            f"QUALIFY ROW_NUMBER() OVER (ORDER BY {order}) <= @keep",
        )

    def partition_stats(self, table: Table, start: date, end: date) -> dict[date, PartitionStats]:
        """Rows and ``MAX(_loaded_at)`` counted in the table: one query, pruned to the
        window's partitions."""
        _check_day(start)
        _check_day(end)
        _, rows = self._query(
            self._stats_sql(table), {"start": start, "end": end}, what=f"count {table.key}"
        )
        return {
            r["day"]: base.stats_row(
                r["n"],
                r["loaded"].astimezone(UTC) if r["loaded"] else None,
                r["key_count"],
                r["duplicated"],
                r["null_keys"],
                r["example"],
            )
            for r in rows
        }

    def window_stats(
        self, tables: Sequence[Table], start: date, end: date, metadata: bool = False
    ) -> dict[str, dict[date, PartitionStats]]:
        """Counted in each table (one pruned query per table); ``metadata``: from
        ``INFORMATION_SCHEMA.PARTITIONS``, one query per dataset and no table bytes, its load
        time a commit time and possibly behind the writes (what sweeps read)."""
        if not metadata:
            return {t.name: self.partition_stats(t, start, end) for t in tables}
        _check_day(start)
        _check_day(end)
        out: dict[str, dict[date, PartitionStats]] = {t.name: {} for t in tables}
        unpartitioned: list[Table] = []
        for dataset in sorted({t.dataset for t in tables}):
            mine = {t.name: t for t in tables if t.dataset == dataset}
            _, rows = self._query(
                self._metadata_sql(dataset),
                {"tables": sorted(mine), "first": f"{start:%Y%m%d}", "last": f"{end:%Y%m%d}"},
                what=f"partition metadata of {dataset}",
            )
            for row in rows:
                name, pid = row["table_name"], row["partition_id"]
                if pid is None:
                    unpartitioned.append(mine[name])
                elif pid.isdigit() and row["total_rows"]:
                    day = datetime.strptime(pid, "%Y%m%d").date()
                    modified = row["last_modified_time"]
                    out[name][day] = PartitionStats(
                        rows=int(row["total_rows"]),
                        loaded_at=modified.astimezone(UTC) if modified else None,
                    )
        for t in unpartitioned:  # a platform table that is not partitioned: count its rows
            out[t.name] = self.partition_stats(t, start, end)
        return out

    def punch_gap(self, table: Table, day: date, keep: float = 0.0) -> tuple[int, int]:
        _check_day(day)
        before = self.partition_stats(table, day, day).get(day)
        before_rows = before.rows if before else 0
        kept = int(before_rows * keep)
        what = f"gap {table.key} {day}"
        if kept == 0:
            self._query(self._empty_sql(table), {"d": day}, what=what)
        else:
            params = {"d": day, "keep": kept, "days": [day], "loaded_at": now_utc()}
            self._query(self._gap_sql(table), params, what=what)
        return before_rows, kept

    def _copies_sql(self, table: Table) -> str:
        cols = ", ".join([*table.column_names, LOADED_AT])
        return (
            f"INSERT INTO {self.ref(table)} ({cols}) SELECT {cols} FROM {self.ref(table)}, "
            f"UNNEST(GENERATE_ARRAY(1, @extra)) AS copy WHERE {table.partition_column} = @d"
        )

    def multiply(self, table: Table, day: date, copies: int) -> tuple[int, int]:
        _check_day(day)
        found = self.partition_stats(table, day, day).get(day)
        before = found.rows if found else 0
        if before and copies > 1:
            params = {"d": day, "extra": copies - 1}
            self._query(self._copies_sql(table), params, what=f"copies {table.key} {day}")
        return before, before * max(copies, 1)

    # --- production chores: a run's jobs, and what doctor reads ----------------------------

    def all_statements(self, day: date) -> list[Statement]:
        """Every statement this warehouse sends (the loads and staged merges aside: a load
        job cannot be dry-run), with the parameters it would send for ``day``; ``heal``: read
        by a one-date heal of every table (its checks, input guards and processors)."""
        _check_day(day)
        out = []
        for table in TABLES:
            start = day - timedelta(days=table.lookback_days + 1)
            out.append(
                Statement(
                    f"count {table.key}",
                    self._stats_sql(table),
                    {"start": start, "end": day},
                    (table.key,),
                    heal=True,
                )
            )
            if table.phase == 2:
                out.append(
                    Statement(
                        f"empty {table.key}", self._empty_sql(table), {"d": day}, (table.key,)
                    )
                )
        stamp = now_utc()
        for table in TABLES:
            if table.phase != 4:
                continue
            params = {**base.processor_params(table, [day]), "loaded_at": stamp}
            reads = tuple(BY_NAME[u.table].key for u in table.upstream)
            sql = self.replace_sql(table, self.phase4_sql(table))
            out.append(
                Statement(f"processor {table.key}", sql, params, (table.key, *reads), heal=True)
            )
        for dataset in sorted({t.dataset for t in TABLES}):
            names = sorted(t.name for t in TABLES if t.dataset == dataset)
            params = {"tables": names, "first": f"{day:%Y%m%d}", "last": f"{day:%Y%m%d}"}
            out.append(Statement(f"sweep metadata {dataset}", self._metadata_sql(dataset), params))
        box = next(t for t in TABLES if t.phase == 2 and t.upstream)
        gap = {"d": day, "keep": 1, "days": [day], "loaded_at": stamp}
        out.append(Statement(f"gap --keep {box.key}", self._gap_sql(box), gap, (box.key,)))
        sample = history.HealRecord(
            phase="phase2",
            target_date=day,
            missing_components=[],
            healing_result=history.HealingResult(triggered=False, reason="doctor"),
            correlation_id=str(uuid.uuid4()),
            timestamp=stamp,
        )
        log_ = (f"{history.DATASET}/{history.TABLE}",)
        out += [
            Statement(
                "history insert", self._merge(update=False), self._history_params(sample), log_
            ),
            Statement(
                "history update", self._merge(update=True), self._history_params(sample), log_
            ),
            Statement(
                "history alert note", self._note_sql(), {"note": "{}", "id": sample.id}, log_
            ),
            Statement("history read", *self.history_sql(base.HistoryFilter(day=day)), log_),
        ]
        return out

    def cancel_run_jobs(self, run_id: str, since: datetime | None = None) -> list[str]:
        """Cancel every pending or running job labelled with ``run_id`` (a run that was
        terminated or reaped must not write later); returns their ids."""
        wanted = label(run_id)
        since = since or now_utc() - timedelta(days=2)
        cancelled = []
        client = self.client()
        for state in ("pending", "running"):
            for job in client.list_jobs(state_filter=state, min_creation_time=since):
                if (job.labels or {}).get("dagster_run_id") == wanted:
                    with suppress(Exception):
                        client.cancel_job(job.job_id, location=job.location)
                        cancelled.append(job.job_id)
        return cancelled

    def dataset_location(self, dataset: str) -> str | None:
        """The dataset's location, None when it does not exist."""
        from google.api_core.exceptions import NotFound

        try:
            return self.client().get_dataset(f"{self.project}.{dataset}").location
        except NotFound:
            return None

    def table_shape(self, table_id: str) -> Shape | None:
        """How ``dataset.table`` is declared, None when it does not exist (a 403 raises)."""
        from google.api_core.exceptions import NotFound

        try:
            found = self.client().get_table(f"{self.project}.{table_id}")
        except NotFound:
            return None
        return Shape(
            partition=found.time_partitioning.field if found.time_partitioning else None,
            clustering=tuple(found.clustering_fields or ()),
            require_filter=bool(found.require_partition_filter),
            columns={f.name: (f.field_type, f.mode or "NULLABLE") for f in found.schema},
        )

    # --- heal history -----------------------------------------------------------------------

    def _history_params(self, record: history.HealRecord, prefix: str = "p_") -> dict[str, Any]:
        """Typed from the history schema: a NULL still carries its column's type."""
        row = record.to_row()
        return {
            f"{prefix}{c}": bigquery.ScalarQueryParameter(f"{prefix}{c}", TYPES[kind], row[c])
            for c, kind in history.COLUMNS.items()
        }

    def _merge(self, update: bool, columns: Sequence[str] | None = None, rows: int = 0) -> str:
        """One MERGE keyed on id: of the ``@p_`` parameters, or (``rows``) of ``@p{i}_``."""
        cols = list(history.COLUMNS)
        if rows:
            source = " UNION ALL ".join(
                "SELECT " + ", ".join(f"@p{i}_{c} AS {c}" for c in cols) for i in range(rows)
            )
        else:
            source = "SELECT " + ", ".join(f"@p_{c} AS {c}" for c in cols)
        sql = f"MERGE {self._history_ref()} AS t USING ({source}) AS s ON t.id = s.id "
        if update:
            changed = [c for c in (columns or cols) if c != "id"]
            sets = ", ".join(f"{c} = s.{c}" for c in changed)
            sql += f"WHEN MATCHED THEN UPDATE SET {sets} "
        return sql + (
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) "
            f"VALUES ({', '.join(f's.{c}' for c in cols)})"
        )

    def insert_history(self, record: history.HealRecord) -> bool:
        job, _ = self._query(
            self._merge(update=False), self._history_params(record), what="store a heal record"
        )
        return bool(job.num_dml_affected_rows)

    def insert_histories(self, records: Sequence[history.HealRecord]) -> int:
        """One MERGE statement for all of them (a DML statement is atomic); ids repeated in
        the batch are sent once."""
        unique = list({r.id: r for r in records}.values())
        if not unique:
            return 0
        params = {}
        for i, record in enumerate(unique):
            params.update(self._history_params(record, prefix=f"p{i}_"))
        job, _ = self._query(
            self._merge(update=False, rows=len(unique)), params, what="store heal records"
        )
        return int(job.num_dml_affected_rows or 0)

    def update_history(
        self, record: history.HealRecord, columns: Sequence[str] | None = None
    ) -> None:
        self._query(
            self._merge(update=True, columns=columns),
            self._history_params(record),
            what="update a heal record",
        )

    def note_alert(self, record_id: str, note: Mapping[str, Any]) -> None:
        """One DML statement appends to the JSON list, so it is atomic against other writers."""
        self._query(
            self._note_sql(),
            {"note": json.dumps(dict(note), sort_keys=True), "id": record_id},
            what="note an alert",
        )

    def _note_sql(self) -> str:
        return (
            f"UPDATE {self._history_ref()} SET alerts = IF(alerts IS NULL OR alerts = '[]', "
            "CONCAT('[', @note, ']'), CONCAT(SUBSTR(alerts, 1, LENGTH(alerts) - 1), ', ', "
            "@note, ']')) WHERE id = @id"
        )

    def read_history(self, where: base.HistoryFilter) -> list[history.HealRecord]:
        sql, params = self.history_sql(where)
        _, rows = self._query(sql, params, what="read the heal history")
        return [history.HealRecord.from_row(dict(r.items())) for r in rows]

    def history_sql(self, where: base.HistoryFilter) -> tuple[str, dict[str, Any]]:
        clauses, params = [], {"limit": int(where.limit)}
        if where.day is not None:
            clauses.append("target_date = @day")
            params["day"] = _check_day(where.day)
        if where.correlation_id is not None:
            clauses.append("STARTS_WITH(correlation_id, @cid)")
            params["cid"] = where.correlation_id
        for name, bound, op in (("since", where.since, ">="), ("until", where.until, "<")):
            if bound is not None:  # recorded in [since, until)
                clauses.append(f"timestamp {op} @{name}")
                params[name] = bound
        sql = f"SELECT * FROM {self._history_ref()}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return sql + " ORDER BY timestamp DESC, id LIMIT @limit", params

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        _, rows = self._query(sql, params)
        return [dict(r.items()) for r in rows]
