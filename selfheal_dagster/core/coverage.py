"""A window of dates for many tables at once: the shape behind coverage views and sweeps
(read by ``adapters.warehouse.read_window``: one query per table for the whole window)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from selfheal_dagster.core.dates import date_range
from selfheal_dagster.tables import SCHEDULE, Table


@dataclass(frozen=True)
class PartitionStats:
    rows: int
    loaded_at: datetime | None  # aware UTC; None when the partition holds no rows


@dataclass(frozen=True)
class Window:
    start: date
    end: date
    stats: dict[str, dict[date, PartitionStats]]  # table name -> date -> stats

    @property
    def days(self) -> list[date]:
        return date_range(self.start, self.end)

    def rows(self, table: Table, day: date) -> int:
        found = self.stats.get(table.name, {}).get(day)
        return found.rows if found else 0

    def games(self, day: date) -> int:
        """Games on ``day`` as the schedule table has them (one row per game)."""
        return self.rows(SCHEDULE, day)
