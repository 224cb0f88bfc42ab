"""The one small interface both warehouses (DuckDB locally, BigQuery in production) implement."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib import resources
from typing import Any, ClassVar, Protocol

from selfheal_dagster.core.coverage import PartitionStats, Window
from selfheal_dagster.core.history import HealRecord
from selfheal_dagster.tables import BY_NAME, LOADED_AT, SCHEDULE, TABLES, Table


class WarehouseError(RuntimeError):
    """A warehouse operation failed; the message is one line a person can act on."""


@dataclass(frozen=True)
class WriteResult:
    rows: int
    loaded_at: datetime | None  # None: read back and found no rows (nothing to date)
    by_day: Mapping[date, int] = field(default_factory=dict)  # rows per date of a range write

    def rows_on(self, day: date) -> int:
        return self.by_day.get(day, 0) if self.by_day else self.rows


def processor_params(table: Table, days: Sequence[date]) -> dict[str, Any]:
    """The parameters of a processor over the date spine ``days``: history is read from
    ``since`` (the first date's lookback start) up to, not including, the last date; the
    inputs of the dates themselves from ``first`` to ``last`` (every read is bounded by its
    partition column, so BigQuery scans only those partitions)."""
    days = sorted(set(days))
    if not days:
        raise WarehouseError(f"processor {table.key}: no dates to compute")
    return {
        "days": days,
        "since": days[0] - timedelta(days=table.lookback_days),
        "until": days[-1],
        "first": days[0],
        "last": days[-1],
        "lookback": table.lookback_days,
    }


def stats_sql(table: Table, ref: str, start: str, end: str) -> str:
    """Per date in [start, end]: rows, newest ``_loaded_at``, and the row key's counts
    (distinct keys, keys seen more than once, rows with a NULL key, one duplicated key), in
    one statement both engines read; ``start``/``end`` are the engine's parameter markers.
    Grouped by date and key first, so the keys are counted in one pass over the rows."""
    pc = table.partition_column
    keys = [k for k in table.row_key if k != pc] or [pc]
    listed = ", ".join(keys)
    nulls = " OR ".join(f"{k} IS NULL" for k in keys)
    example = " || '/' || ".join(f"COALESCE(CAST({k} AS STRING), 'NULL')" for k in keys)
    return (
        f"WITH keyed AS (SELECT {pc} AS day, {listed}, COUNT(*) AS copies, "
        f"MAX({LOADED_AT}) AS loaded FROM {ref} WHERE {pc} BETWEEN {start} AND {end} "
        f"GROUP BY {pc}, {listed}) "
        "SELECT day, SUM(copies) AS n, MAX(loaded) AS loaded, COUNT(*) AS key_count, "
        "SUM(CASE WHEN copies > 1 THEN 1 ELSE 0 END) AS duplicated, "
        f"SUM(CASE WHEN {nulls} THEN copies ELSE 0 END) AS null_keys, "
        f"MIN(CASE WHEN copies > 1 THEN {example} END) AS example "
        "FROM keyed GROUP BY day"
    )


def stats_row(n, loaded, key_count, duplicated, null_keys, example) -> PartitionStats:
    """One row of ``stats_sql`` (``loaded`` aware UTC or None)."""
    return PartitionStats(
        rows=int(n),
        loaded_at=loaded,
        keys=int(key_count),
        duplicated=int(duplicated),
        null_keys=int(null_keys),
        example=example,
    )


def processor_sql(table: Table) -> str:
    """The Phase 4 processor of ``table``: a SELECT template shared by every engine.

    Table references are ``{table_name}`` placeholders; values are the named parameters of
    ``processor_params``: ``$days`` (the date spine: one date, or a range), ``$lookback`` and
    the bounds ``$since``/``$until`` of every history read. One statement computes the whole
    spine, so a range costs one query, not one per date.
    """
    return (
        resources.files("selfheal_dagster.adapters.warehouse.sql")
        .joinpath(f"{table.name}.sql")
        .read_text()
    )


@dataclass(frozen=True)
class HistoryFilter:
    """Which heal records to read: all that match every field given."""

    day: date | None = None  # target date
    correlation_id: str | None = None  # a prefix, matched literally
    limit: int = 500
    since: datetime | None = None  # recorded at or after
    until: datetime | None = None  # recorded before


class StatsReader(Protocol):
    """What reading a window of partitions needs of a warehouse: one call, no write."""

    def window_stats(
        self, tables: Sequence[Table], start: date, end: date, metadata: bool = False
    ) -> dict[str, dict[date, PartitionStats]]: ...


class HistoryReader(Protocol):
    """What reading the heal history needs of a warehouse: one call, no write."""

    def history(self, **where: Any) -> list[HealRecord]: ...


class Warehouse(ABC):
    """Partition-level storage for the registry's tables.

    Every write replaces whole dates of one table atomically (one date, or every date of a
    range in one transaction); ``statements`` counts what
    was sent to the engine so callers (tests, benchmarks) can see the cost of an operation.
    """

    kind: ClassVar[str]
    # Whether ``window_stats(metadata=True)`` reads the rows themselves (no lag, no commit
    # times): true where there is no cheaper metadata to read.
    metadata_is_exact: ClassVar[bool] = True

    def __init__(self) -> None:
        self.statements = 0

    def close(self) -> None:  # noqa: B027 - most engines hold nothing between statements
        """Release the engine's client or connection (idempotent)."""

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cancel_run_jobs(self, run_id: str) -> list[str]:
        """Cancel the engine's jobs still running for a Dagster run; their ids. An engine
        whose writes live and die with the process (DuckDB) has none."""
        return []

    @abstractmethod
    def ref(self, table: Table) -> str:
        """The engine's quoted reference to ``table``."""

    @abstractmethod
    def ensure_tables(self, tables: Sequence[Table] = TABLES) -> None:
        """Create the datasets and tables of the registry that do not exist yet."""

    @abstractmethod
    def replace_partition(
        self, table: Table, day: date, rows: Sequence[Mapping[str, Any]]
    ) -> WriteResult:
        """Make ``rows`` the whole content of ``table`` for ``day``, atomically."""

    @abstractmethod
    def replace_partitions(
        self, table: Table, rows_by_day: Mapping[date, Sequence[Mapping[str, Any]]]
    ) -> WriteResult:
        """Make each date's rows the whole content of its partition: every date or none."""

    @abstractmethod
    def run_processor(self, table: Table, days: Sequence[date]) -> WriteResult:
        """Compute ``table`` for every date of ``days`` from its processor SQL (one statement)
        and replace those partitions, every date or none."""

    @abstractmethod
    def partition_stats(self, table: Table, start: date, end: date) -> dict[date, PartitionStats]:
        """Rows and newest ``_loaded_at`` per date in [start, end], counted in the table
        itself, in one query for the table."""

    def window_stats(
        self, tables: Sequence[Table], start: date, end: date, metadata: bool = False
    ) -> dict[str, dict[date, PartitionStats]]:
        """``partition_stats`` for several tables: still one query per table. ``metadata``:
        from the engine's partition metadata where it has some (cheap, but a commit time and
        possibly lagging: for sweeps, never for the checks of a write)."""
        return {t.name: self.partition_stats(t, start, end) for t in tables}

    @abstractmethod
    def punch_gap(self, table: Table, day: date, keep: float = 0.0) -> tuple[int, int]:
        """Delete a date's rows, or all but ``keep`` of them; returns (rows before, rows after)."""

    @abstractmethod
    def multiply(self, table: Table, day: date, copies: int) -> tuple[int, int]:
        """Hold every row of a date ``copies`` times (a doubled load, to rehearse one);
        returns (rows before, rows after)."""

    @abstractmethod
    def insert_history(self, record: HealRecord) -> bool:
        """Store a new heal record unless its id exists; True when this call stored it."""

    @abstractmethod
    def insert_histories(self, records: Sequence[HealRecord]) -> int:
        """``insert_history`` for several records in one atomic write (a heal tick's records
        of an incident are seen all together or not at all); returns how many were new."""

    @abstractmethod
    def update_history(self, record: HealRecord, columns: Sequence[str] | None = None) -> None:
        """Replace the stored heal record with the same id; only ``columns`` when given, so
        two writers of different columns (an outcome, an alert note) never undo each other."""

    @abstractmethod
    def note_alert(self, record_id: str, note: Mapping[str, Any]) -> None:
        """Append ``note`` to the record's alerts, atomically."""

    def history(self, **where: Any) -> list[HealRecord]:
        """Heal records, newest first, filtered by ``HistoryFilter``'s keywords: target date,
        correlation ID (a prefix) and/or when recorded (``since`` <= timestamp < ``until``)."""
        return self.read_history(HistoryFilter(**where))

    @abstractmethod
    def read_history(self, where: HistoryFilter) -> list[HealRecord]:
        """``history``, in this warehouse's SQL."""

    @abstractmethod
    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read-only query (table refs already rendered) and return rows as dicts."""

    @staticmethod
    def check_rows(table: Table, day: date, rows: Sequence[Mapping[str, Any]]) -> None:
        """Every row belongs to this partition and has every column: a write never strays."""
        cols, pc = table.column_names, table.partition_column
        for i, row in enumerate(rows):
            missing = [c for c in cols if c not in row]
            if missing or row[pc] != day:
                raise WarehouseError(
                    f"row {i} for {table.key} {day} is not of that partition"
                    + (f": lacks {', '.join(missing)}" if missing else f": {pc}={row[pc]}")
                )

    def render(self, template: str) -> str:
        """Substitute ``{table_name}`` placeholders with this engine's table references."""
        return template.format_map({name: self.ref(t) for name, t in BY_NAME.items()})

    def games_on(self, day: date) -> int:
        """Games scheduled on ``day``, as the warehouse's schedule table knows them."""
        stats = self.partition_stats(SCHEDULE, day, day).get(day)
        return stats.rows if stats else 0


def read_window(
    warehouse: StatsReader,
    start: date,
    end: date,
    tables: Sequence[Table] = TABLES,
    metadata: bool = False,
) -> Window:
    """Every table's per-date stats over [start, end]: one query per table (the schedule
    always, since checks read games from it); ``metadata``: see ``window_stats``."""
    wanted = {t.name: t for t in tables}
    wanted.setdefault(SCHEDULE.name, SCHEDULE)
    stats = warehouse.window_stats(list(wanted.values()), start, end, metadata=metadata)
    return Window(start=start, end=end, stats=stats)
