"""Pure heal planning: failed (asset, date) pairs -> the runs that repair them.

A plan holds the failed partitions plus every downstream partition that reads them (through
the asset graph and its partition mappings) and already exists, and nothing else; one run per
date, its assets in dependency order, each run after the runs whose output it reads.
No Dagster import: the graph is plain data, built from Dagster's asset graph by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta


@dataclass(frozen=True)
class Edge:
    """``child`` for date D reads ``parent`` for the dates D+start .. D+end (inclusive)."""

    parent: str
    child: str
    start: int = 0
    end: int = 0

    def child_dates(self, parent_day: date) -> list[date]:
        """The child partitions that read ``parent_day``."""
        return [parent_day - timedelta(days=k) for k in range(self.start, self.end + 1)]


@dataclass(frozen=True)
class Graph:
    order: tuple[str, ...]  # every asset, parents before children
    edges: tuple[Edge, ...]

    def children(self, asset: str) -> list[Edge]:
        return [e for e in self.edges if e.parent == asset]

    def parents(self, asset: str) -> list[Edge]:
        return [e for e in self.edges if e.child == asset]


@dataclass(frozen=True)
class PlannedRun:
    day: date
    assets: tuple[str, ...]  # dependency order
    failed: tuple[str, ...]  # the assets in this run that were reported failed
    after: tuple[date, ...] = ()  # dates of runs in the plan whose output this run reads


@dataclass
class Plan:
    runs: list[PlannedRun] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        """``{"YYYY-MM-DD": ["dataset/table", ...]}`` in execution order."""
        return {r.day.isoformat(): list(r.assets) for r in self.runs}

    @property
    def partitions(self) -> int:
        return sum(len(r.assets) for r in self.runs)


def plan(
    failed: Iterable[tuple[str, date]],
    graph: Graph,
    exists: Callable[[str, date], bool],
    last_day: date,
) -> Plan:
    """Plan the heal of ``failed``.

    ``exists(asset, day)`` says whether a downstream partition exists already (only those are
    refreshed; a failed partition is healed whether or not it exists). ``last_day`` is the
    newest partition there is: nothing after it is planned.
    """
    failed = {(a, d) for a, d in failed if d <= last_day}
    chosen: set[tuple[str, date]] = set(failed)
    frontier = list(failed)
    while frontier:
        asset, day = frontier.pop()
        for edge in graph.children(asset):
            for child_day in edge.child_dates(day):
                target = (edge.child, child_day)
                if child_day > last_day or target in chosen or not exists(*target):
                    continue
                chosen.add(target)
                frontier.append(target)

    rank = {a: i for i, a in enumerate(graph.order)}
    by_day: dict[date, list[str]] = {}
    for asset, day in chosen:
        by_day.setdefault(day, []).append(asset)
    runs = []
    for day in sorted(by_day):
        assets = sorted(by_day[day], key=rank.__getitem__)
        after = set()
        for asset in assets:
            for edge in graph.parents(asset):
                for offset in range(edge.start, edge.end + 1):
                    read = day + timedelta(days=offset)
                    if read != day and edge.parent in by_day.get(read, ()):
                        after.add(read)
        runs.append(
            PlannedRun(
                day=day,
                assets=tuple(assets),
                failed=tuple(a for a in assets if (a, day) in failed),
                after=tuple(sorted(after)),
            )
        )
    return Plan(runs=runs)


def from_dependencies(
    order: Sequence[str], dependencies: Mapping[str, Iterable[tuple[str, int, int]]]
) -> Graph:
    """Build a graph from ``{child: [(parent, start_offset, end_offset), ...]}``."""
    edges = tuple(
        Edge(parent=p, child=c, start=s, end=e)
        for c, parents in dependencies.items()
        for p, s, e in parents
    )
    return Graph(order=tuple(order), edges=edges)
