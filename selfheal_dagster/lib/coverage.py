"""Read a window of dates for many tables at once: the shape behind coverage views and sweeps.

One query per table for the whole window, never one per table per date.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from selfheal_dagster.lib.dates import date_range
from selfheal_dagster.lib.warehouse import PartitionStats, Warehouse
from selfheal_dagster.tables import SCHEDULE, TABLES, Table


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


def read_window(
    warehouse: Warehouse, start: date, end: date, tables: Sequence[Table] = TABLES
) -> Window:
    wanted = {t.name: t for t in tables}
    wanted.setdefault(SCHEDULE.name, SCHEDULE)
    return Window(
        start=start, end=end, stats=warehouse.window_stats(list(wanted.values()), start, end)
    )
