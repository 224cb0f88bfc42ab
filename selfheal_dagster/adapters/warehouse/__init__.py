"""Warehouses behind one interface; import an engine's module only where that engine is used."""

from selfheal_dagster.adapters.warehouse.base import (
    PartitionStats,
    Warehouse,
    WarehouseError,
    WriteResult,
    processor_sql,
    read_window,
)

__all__ = [
    "PartitionStats",
    "Warehouse",
    "WarehouseError",
    "WriteResult",
    "processor_sql",
    "read_window",
]
