"""Warehouses behind one interface; import an engine's module only where that engine is used."""

from selfheal_dagster.adapters.warehouse.base import (
    HistoryReader,
    PartitionStats,
    StatsReader,
    Warehouse,
    WarehouseError,
    WriteResult,
    processor_sql,
    read_window,
)

__all__ = [
    "HistoryReader",
    "PartitionStats",
    "StatsReader",
    "Warehouse",
    "WarehouseError",
    "WriteResult",
    "processor_sql",
    "read_window",
]
