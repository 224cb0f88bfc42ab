"""Which (asset, date) partitions runs claim: what no heal may write, or read, under them.

Every run in flight claims what it writes, whatever launched it (heals, the materialising CLI,
backfills). A sequential backfill claims its whole range, and between two of its runs for a
moment it has none in flight: its latest run that was not its last keeps the range claimed
(``instance/heal_loop.busy_partitions`` reads the runs updated in that gap).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from selfheal_dagster.core.dates import date_range, tag_days
from selfheal_dagster.core.heal_state import Partition, frozen_map
from selfheal_dagster.core.names import BACKFILL, BACKFILL_STEP


@dataclass(frozen=True)
class RunInfo:
    """What claiming needs of a run: its id, job, tags and asset selection (empty: all)."""

    run_id: str
    job: str
    tags: Mapping[str, str] = field(default_factory=frozen_map)
    assets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", frozen_map(self.tags))

    @property
    def step(self) -> tuple[int, int]:
        """``(k, n)``: this run is the k-th of its backfill's n (a lone run: 1 of 1)."""
        k, _, n = self.tags.get(BACKFILL_STEP, "1/1").partition("/")
        return int(k), int(n)

    def days(self) -> list[date]:
        """What it claims: a backfill's whole range, else the dates its tags say it computes."""
        if BACKFILL in self.tags:
            first, _, last = self.tags[BACKFILL].partition("..")
            return date_range(date.fromisoformat(first), date.fromisoformat(last or first))
        return tag_days(self.tags)


def between_steps(recent: Iterable[RunInfo]) -> list[RunInfo]:
    """Per backfill among ``recent`` runs, its latest run, if more of its runs are to come."""
    latest: dict[str, RunInfo] = {}
    for run in recent:
        if BACKFILL not in run.tags:
            continue
        known = latest.get(run.tags[BACKFILL])
        if known is None or run.step[0] > known.step[0]:
            latest[run.tags[BACKFILL]] = run
    return [run for run in latest.values() if run.step[0] != run.step[1]]


def claims(
    runs: Iterable[RunInfo], *, tables: Sequence[str], write_no_table: Iterable[str]
) -> dict[Partition, str]:
    """Each partition of ``tables`` a run writes -> that run's id. Jobs in
    ``write_no_table`` (the sweep, the heal figures) and unpartitioned runs claim nothing."""
    silent, known = set(write_no_table), set(tables)
    out: dict[Partition, str] = {}
    for run in runs:
        if run.job in silent:
            continue
        assets = [a for a in (run.assets or tables) if a in known]
        out.update({(a, d): run.run_id for a in assets for d in run.days()})
    return out
