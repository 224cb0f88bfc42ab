"""A window of dates for many tables at once: the shape behind coverage views and sweeps
(read by ``adapters.warehouse.read_window``: one query per table for the whole window)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from selfheal_dagster.core.dates import date_range
from selfheal_dagster.tables import SCHEDULE, Table


@dataclass(frozen=True)
class PartitionStats:
    """One partition as a read saw it. The key counts come only from reading the rows (an
    engine's partition metadata cannot count keys): None when not read."""

    rows: int
    loaded_at: datetime | None  # aware UTC; None when the partition holds no rows
    keys: int | None = None  # distinct values of the table's row key
    duplicated: int | None = None  # keys that appear more than once
    null_keys: int | None = None  # rows with a NULL in a key column
    example: str | None = None  # one duplicated key, its columns joined by "/"


@dataclass(frozen=True)
class Window:
    start: date
    end: date
    stats: dict[str, dict[date, PartitionStats]]  # table name -> date -> stats
    # What the checks derived from these stats (games, expectations), each once: a window's
    # evaluation asks for the same (table, date) from every later date's volume bound.
    memo: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def days(self) -> list[date]:
        return date_range(self.start, self.end)

    def rows(self, table: Table, day: date) -> int:
        found = self.stats.get(table.name, {}).get(day)
        return found.rows if found else 0

    def games(self, day: date) -> int:
        """Games on ``day`` as the schedule table has them: its distinct game ids when the
        read counted them (a doubled schedule is not twice the games), else its rows."""
        found = self.stats.get(SCHEDULE.name, {}).get(day)
        if found is None:
            return 0
        return found.keys if found.keys is not None else found.rows
