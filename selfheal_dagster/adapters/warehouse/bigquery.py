"""The BigQuery warehouse: production, behind the same interface as DuckDB.

- A one-date write is ONE job into the partition decorator ``table$YYYYMMDD`` with
  WRITE_TRUNCATE (a load job for Phase 2 rows, a query job for Phase 4 SQL): atomic, so a
  crash leaves the previous rows and two runs never duplicate.
- A range write is ONE multi-statement transaction (``BEGIN TRANSACTION; DELETE the range's
  dates; INSERT …; COMMIT TRANSACTION``), so the whole range is replaced or none of it: a
  failure mid-way leaves every partition as it was. Not one WRITE_TRUNCATE job per date: that
  is atomic per date only (a failure at date 90 of 180 leaves a half-new range) and costs 180
  jobs. Phase 2 rows reach the transaction through a staging table loaded by one load job
  and dropped after (it also expires after a day if the drop never runs).
- The sweep reads row counts and load times from ``INFORMATION_SCHEMA.PARTITIONS``, one
  metadata query per dataset (no table bytes scanned), falling back to a GROUP BY on the date
  column for a table that is not partitioned.
- Values are always query parameters; identifiers come only from the registry and are
  validated and backtick-quoted.
- The Phase 4 SQL is the same source as DuckDB's, transpiled with sqlglot.

Imported only in production: it pulls in the Google client libraries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

import sqlglot
from google.cloud import bigquery

from selfheal_dagster.adapters.warehouse import base
from selfheal_dagster.adapters.warehouse.base import PartitionStats, WarehouseError, WriteResult
from selfheal_dagster.core import history
from selfheal_dagster.core.dates import now_utc
from selfheal_dagster.core.errors import error_line
from selfheal_dagster.tables import BY_NAME, LOADED_AT, TABLES, Table

TYPES = {
    "DATE": "DATE",
    "STRING": "STRING",
    "INT": "INT64",
    "FLOAT": "FLOAT64",
    "BOOL": "BOOL",
    "TIMESTAMP": "TIMESTAMP",
}
_IDENT = re.compile(r"^([a-z_][a-z0-9_]*|INFORMATION_SCHEMA|PARTITIONS)$")
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")


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


@cache
def _transpiled(project: str, name: str) -> str:
    table = BY_NAME[name]
    # One quoted identifier per table (`project.dataset.table`), as quote() writes them.
    refs = {n: f'"{project}.{t.dataset}.{n}"' for n, t in BY_NAME.items()}
    duckdb_sql = base.processor_sql(table).format_map(refs)
    return sqlglot.transpile(duckdb_sql, read="duckdb", write="bigquery", comments=False)[0]


class BigQueryWarehouse(base.Warehouse):
    kind = "bigquery"

    def __init__(
        self,
        project: str,
        location: str | None,
        client: Callable[[], AbstractContextManager[bigquery.Client]],
    ) -> None:
        super().__init__()
        quote(project)  # validates
        self.project = project
        self.location = location
        self._client = client

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
        """Datasets and tables from the registry (the job's location places the datasets)."""
        out = [
            f"CREATE SCHEMA IF NOT EXISTS {quote(self.project, dataset)}"
            for dataset in sorted({t.dataset for t in tables} | {history.DATASET})
        ]
        for t in tables:
            cols = [f"{c.name} {TYPES[c.type]}" for c in t.columns]
            cols.append(f"{LOADED_AT} TIMESTAMP NOT NULL")
            for name in [t.partition_column, *t.cluster_by]:
                quote(self.project, name)
            sql = (
                f"CREATE TABLE IF NOT EXISTS {self.ref(t)} ({', '.join(cols)}) "
                f"PARTITION BY {t.partition_column}"
            )
            if t.cluster_by:
                sql += f" CLUSTER BY {', '.join(t.cluster_by)}"
            out.append(sql)
        cols = ", ".join(f"{c} {TYPES[k]}" for c, k in history.COLUMNS.items())
        out.append(
            f"CREATE TABLE IF NOT EXISTS {self._history_ref()} ({cols}) "
            "PARTITION BY target_date CLUSTER BY correlation_id"
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

    # --- running ----------------------------------------------------------------------------

    def _query(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        **config: Any,
    ) -> Any:
        self.statements += 1
        used = {k: v for k, v in (params or {}).items() if f"@{k}" in sql}
        job_config = bigquery.QueryJobConfig(
            query_parameters=[_param(k, v) for k, v in used.items()], **config
        )
        try:
            with self._client() as client:
                job = client.query(sql, job_config=job_config, location=self.location)
                result = job.result()
        except Exception as exc:
            raise WarehouseError(f"BigQuery job failed: {error_line(exc)}") from exc
        return job, result

    def ensure_tables(self, tables: Sequence[Table] = TABLES) -> None:
        for sql in self.ddl(tables):
            self._query(sql)

    def _partitioning(self, table: Table) -> dict[str, Any]:
        return {
            "write_disposition": bigquery.WriteDisposition.WRITE_TRUNCATE,
            "time_partitioning": bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=table.partition_column
            ),
            "clustering_fields": list(table.cluster_by) or None,
        }

    def schema(self, table: Table) -> list[bigquery.SchemaField]:
        fields = [bigquery.SchemaField(c.name, TYPES[c.type]) for c in table.columns]
        return [*fields, bigquery.SchemaField(LOADED_AT, "TIMESTAMP", mode="REQUIRED")]

    def replace_partition(
        self, table: Table, day: date, rows: Sequence[Mapping[str, Any]]
    ) -> WriteResult:
        _check_day(day)
        self.check_rows(table, day, rows)
        loaded_at = now_utc()
        if not rows:  # nothing to load: one DML job empties the partition
            self._query(
                f"DELETE FROM {self.ref(table)} WHERE {table.partition_column} = @d", {"d": day}
            )
            return WriteResult(rows=0, loaded_at=loaded_at)
        payload = [
            {**{c: _json(row[c]) for c in table.column_names}, LOADED_AT: _json(loaded_at)}
            for row in rows
        ]
        job_config = bigquery.LoadJobConfig(
            schema=self.schema(table),
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            **self._partitioning(table),
        )
        self.statements += 1
        try:
            with self._client() as client:
                client.load_table_from_json(
                    payload,
                    self._decorated(table, day),
                    job_config=job_config,
                    location=self.location,
                ).result()
        except Exception as exc:
            raise WarehouseError(
                f"replace {table.key} {day} failed; the previous rows stay: {error_line(exc)}"
            ) from exc
        return WriteResult(rows=len(rows), loaded_at=loaded_at)

    def _staging(self, table: Table) -> str:
        """A run-private staging table next to ``table`` (validated parts, random suffix)."""
        import uuid

        name = f"_stage_{table.name}_{uuid.uuid4().hex[:12]}"
        return quote(self.project, table.dataset, name)

    def range_script(self, table: Table, select: str) -> str:
        """Replace the dates ``@days`` with ``select``'s rows: one transaction, all or none."""
        cols = ", ".join(table.column_names)
        return (
            "BEGIN TRANSACTION;\n"
            f"DELETE FROM {self.ref(table)} WHERE {table.partition_column} IN UNNEST(@days);\n"
            f"INSERT INTO {self.ref(table)} ({cols}, {LOADED_AT}) "
            f"SELECT {cols}, @loaded_at FROM ({select}) AS processed;\n"
            "COMMIT TRANSACTION;"
        )

    def _counted(self, table: Table, days: Sequence[date]) -> dict[date, int]:
        pc = table.partition_column
        _, rows = self._query(
            f"SELECT {pc} AS day, COUNT(*) AS n FROM {self.ref(table)} "
            f"WHERE {pc} IN UNNEST(@days) GROUP BY {pc}",
            {"days": list(days)},
        )
        found = {r["day"]: int(r["n"]) for r in rows}
        return {day: found.get(day, 0) for day in days}

    def replace_partitions(
        self, table: Table, rows_by_day: Mapping[date, Sequence[Mapping[str, Any]]]
    ) -> WriteResult:
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
        self.statements += 1
        try:
            with self._client() as client:
                job_config = bigquery.LoadJobConfig(
                    schema=self.schema(table),
                    source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                    write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
                )
                client.load_table_from_json(
                    payload, staging.strip("`"), job_config=job_config, location=self.location
                ).result()
        except Exception as exc:
            raise WarehouseError(
                f"staging {table.key} {days[0]}..{days[-1]} failed; nothing replaced: "
                f"{error_line(exc)}"
            ) from exc
        try:
            self._query(
                f"ALTER TABLE {staging} SET OPTIONS "
                "(expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 1 DAY))"
            )
            self._query(
                self.range_script(table, f"SELECT * FROM {staging}"),
                {"days": days, "loaded_at": loaded_at},
            )
        finally:
            self._query(f"DROP TABLE IF EXISTS {staging}")
        by_day = {day: len(rows_by_day[day]) for day in days}
        return WriteResult(rows=sum(by_day.values()), loaded_at=loaded_at, by_day=by_day)

    def run_processor(self, table: Table, days: Sequence[date]) -> WriteResult:
        params = base.processor_params(table, [_check_day(d) for d in days])
        loaded_at = now_utc()
        spine = params["days"]
        if len(spine) > 1:
            self._query(
                self.range_script(table, self.phase4_sql(table)),
                {**params, "loaded_at": loaded_at},
            )
            by_day = self._counted(table, spine)
            return WriteResult(rows=sum(by_day.values()), loaded_at=loaded_at, by_day=by_day)
        cols = ", ".join(table.column_names)
        sql = (
            f"SELECT {cols}, @loaded_at AS {LOADED_AT} FROM ({self.phase4_sql(table)}) AS processed"
        )
        _, result = self._query(
            sql,
            {**params, "loaded_at": loaded_at},
            destination=self._decorated(table, spine[0]),
            **self._partitioning(table),
        )
        rows = int(result.total_rows or 0)
        return WriteResult(rows=rows, loaded_at=loaded_at, by_day={spine[0]: rows})

    def window_stats(
        self, tables: Sequence[Table], start: date, end: date
    ) -> dict[str, dict[date, PartitionStats]]:
        """One ``INFORMATION_SCHEMA.PARTITIONS`` query per dataset."""
        _check_day(start)
        _check_day(end)
        out: dict[str, dict[date, PartitionStats]] = {t.name: {} for t in tables}
        unpartitioned: list[Table] = []
        for dataset in sorted({t.dataset for t in tables}):
            mine = {t.name: t for t in tables if t.dataset == dataset}
            _, rows = self._query(
                "SELECT table_name, partition_id, total_rows, last_modified_time "
                f"FROM {quote(self.project, dataset, 'INFORMATION_SCHEMA', 'PARTITIONS')} "
                "WHERE table_name IN UNNEST(@tables) "
                "AND (partition_id IS NULL OR partition_id BETWEEN @first AND @last)",
                {"tables": sorted(mine), "first": f"{start:%Y%m%d}", "last": f"{end:%Y%m%d}"},
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
        for t in unpartitioned:
            _, rows = self._query(
                # Not "AS at": AT is a reserved keyword in BigQuery (found by ZetaSQL).
                f"SELECT {t.partition_column} AS day, COUNT(*) AS n, MAX({LOADED_AT}) AS loaded "
                f"FROM {self.ref(t)} WHERE {t.partition_column} BETWEEN @start AND @end "
                f"GROUP BY {t.partition_column}",
                {"start": start, "end": end},
            )
            out[t.name] = {r["day"]: PartitionStats(int(r["n"]), r["loaded"]) for r in rows}
        return out

    def partition_stats(self, table: Table, start: date, end: date) -> dict[date, PartitionStats]:
        return self.window_stats([table], start, end)[table.name]

    def punch_gap(self, table: Table, day: date, keep: float = 0.0) -> tuple[int, int]:
        _check_day(day)
        pc, ref = table.partition_column, self.ref(table)
        _, rows = self._query(f"SELECT COUNT(*) AS n FROM {ref} WHERE {pc} = @d", {"d": day})
        before = int(next(iter(rows))["n"])
        kept = int(before * keep)
        if kept == 0:
            self._query(f"DELETE FROM {ref} WHERE {pc} = @d", {"d": day})
        else:
            self._query(
                f"SELECT * FROM {ref} WHERE {pc} = @d QUALIFY ROW_NUMBER() OVER () <= @keep",
                {"d": day, "keep": kept},
                destination=self._decorated(table, day),
                **self._partitioning(table),
            )
        return before, kept

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
        job, _ = self._query(self._merge(update=False), self._history_params(record))
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
        job, _ = self._query(self._merge(update=False, rows=len(unique)), params)
        return int(job.num_dml_affected_rows or 0)

    def update_history(
        self, record: history.HealRecord, columns: Sequence[str] | None = None
    ) -> None:
        self._query(self._merge(update=True, columns=columns), self._history_params(record))

    def note_alert(self, record_id: str, note: Mapping[str, Any]) -> None:
        """One DML statement appends to the JSON list, so it is atomic against other writers."""
        sql = (
            f"UPDATE {self._history_ref()} SET alerts = IF(alerts IS NULL OR alerts = '[]', "
            "CONCAT('[', @note, ']'), CONCAT(SUBSTR(alerts, 1, LENGTH(alerts) - 1), ', ', "
            "@note, ']')) WHERE id = @id"
        )
        self._query(sql, {"note": json.dumps(dict(note), sort_keys=True), "id": record_id})

    def read_history(self, where: base.HistoryFilter) -> list[history.HealRecord]:
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
        sql += " ORDER BY timestamp DESC, id LIMIT @limit"
        _, rows = self._query(sql, params)
        return [history.HealRecord.from_row(dict(r.items())) for r in rows]

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        _, rows = self._query(sql, params)
        return [dict(r.items()) for r in rows]
