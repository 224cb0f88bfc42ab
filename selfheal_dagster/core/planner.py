"""Pure heal planning: failed (asset, date) pairs -> the runs that repair them.

A plan holds the failed partitions, the broken input partitions they and the partitions it
refreshes read (root cause first, when repairable), and every downstream partition that reads
them (through the asset graph and its partition mappings) and already exists, unless it also
reads a broken partition that cannot be repaired: nothing else. Each run is one date's assets
in dependency order; a date's assets that must wait for another date's run go in a run of
their own, so an independent repair never waits behind an unrelated one. Refresh runs (no
failed partition in them) of consecutive dates with the same assets at the same depth of the
plan merge into one ranged run: a box-score day's heal is one run for the day and one run for
the thirty dates that read it. Runs that repair a failed partition stay one per date, so one
date's outage never fails another date's repair. No Dagster import: the graph is plain data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from selfheal_dagster.core.dates import date_range

Partition = tuple[str, date]


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

    def reads(self, asset: str, day: date) -> list[Partition]:
        """The partitions ``asset`` for ``day`` reads."""
        return [
            (e.parent, day + timedelta(days=k))
            for e in self.parents(asset)
            for k in range(e.start, e.end + 1)
        ]


@dataclass(frozen=True)
class PlannedRun:
    day: date
    assets: tuple[str, ...]  # dependency order
    failed: tuple[str, ...]  # the assets in this run that were reported failed (or broken input)
    after: tuple[str, ...] = ()  # keys of the runs in the plan whose output this run reads
    part: int = 0  # several runs of one date: 0 first
    last: date | None = None  # a ranged run: every date from ``day`` to ``last``

    @property
    def days(self) -> list[date]:
        return date_range(self.day, self.last or self.day)

    @property
    def key(self) -> str:
        span = self.day.isoformat() + (f"..{self.last.isoformat()}" if self.last else "")
        return span + (f"-{self.part}" if self.part else "")

    @property
    def partitions(self) -> list[Partition]:
        return [(a, d) for d in self.days for a in self.assets]


@dataclass
class Plan:
    runs: list[PlannedRun] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        """``{"YYYY-MM-DD": ["dataset/table", ...]}`` in execution order."""
        out: dict[str, list[str]] = {}
        for r in self.runs:
            for day in r.days:
                out.setdefault(day.isoformat(), []).extend(r.assets)
        return out

    @property
    def partitions(self) -> int:
        return sum(len(r.partitions) for r in self.runs)

    def writes(self) -> set[Partition]:
        return {p for r in self.runs for p in r.partitions}

    def reads(self, graph: Graph) -> set[Partition]:
        """What the plan reads and does not write itself."""
        writes = self.writes()
        return {p for a, d in writes for p in graph.reads(a, d)} - writes


def plan(
    failed: Iterable[Partition],
    graph: Graph,
    exists: Callable[[str, date], bool],
    last_day: date,
    broken_inputs: Callable[[str, date], Iterable[Partition]] | None = None,
    repairable: Callable[[Partition], bool] | None = None,
) -> Plan:
    """Plan the heal of ``failed``.

    ``exists(asset, day)`` says whether a downstream partition exists already (only those are
    refreshed; a failed partition is healed whether or not it exists). ``broken_inputs(asset,
    day)`` names the missing or short partitions that one reads: each that is ``repairable``
    (not given up, not someone else's to repair) joins the plan ahead of its reader, root cause
    first; a downstream partition that reads one that is not is left alone (it would fail on
    it). ``last_day`` is the newest partition: nothing later is planned.
    """
    broken = broken_inputs or (lambda asset, day: ())
    can_repair = repairable or (lambda partition: True)
    roots = {(a, d) for a, d in failed if d <= last_day}
    chosen: set[Partition] = set(roots)
    frontier = sorted(roots)

    def add_inputs(asset: str, day: date) -> bool:
        """Add the repairable broken inputs of a partition; False if one cannot be."""
        for p in broken(asset, day):
            if p in chosen:
                continue
            if p[1] > last_day or not can_repair(p):
                return False
            roots.add(p)
            chosen.add(p)
            frontier.append(p)
        return True

    for asset, day in sorted(roots):
        add_inputs(asset, day)  # a failed target is healed even if it will fail on one
    while frontier:
        asset, day = frontier.pop()
        for edge in graph.children(asset):
            for child_day in edge.child_dates(day):
                target = (edge.child, child_day)
                if child_day > last_day or target in chosen or not exists(*target):
                    continue
                if not all(p in chosen or can_repair(p) for p in broken(*target)):
                    continue
                chosen.add(target)
                frontier.append(target)
                add_inputs(*target)

    def may_write(asset: str, day: date) -> bool:
        return day <= last_day and exists(asset, day) and not list(broken(asset, day))

    return _runs(chosen, roots, graph, may_write)


def _runs(
    chosen: set[Partition],
    roots: set[Partition],
    graph: Graph,
    may_write: Callable[[str, date], bool] = lambda asset, day: False,
) -> Plan:
    """Group a date's partitions by the other-date runs they wait for, in dependency order."""
    rank = {a: i for i, a in enumerate(graph.order)}
    waits: dict[Partition, frozenset[date]] = {}
    for asset, day in sorted(chosen, key=lambda p: (p[1], rank[p[0]])):
        dates: set[date] = set()
        for edge in graph.parents(asset):
            for offset in range(edge.start, edge.end + 1):
                read = (edge.parent, day + timedelta(days=offset))
                if read in chosen:
                    dates |= waits[read] if read[1] == day else {read[1]}
        waits[(asset, day)] = frozenset(dates)
    groups: dict[tuple[date, frozenset[date]], list[str]] = {}
    for (asset, day), dates in sorted(waits.items(), key=lambda kv: (kv[0][1], len(kv[1]))):
        groups.setdefault((day, dates), []).append(asset)
    runs: list[PlannedRun] = []
    key_of: dict[Partition, str] = {}
    parts: dict[date, int] = {}
    for (day, _), assets in sorted(groups.items(), key=lambda kv: (kv[0][0], len(kv[0][1]))):
        assets.sort(key=rank.__getitem__)
        part = parts.get(day, 0)
        parts[day] = part + 1
        after = set()
        for asset in assets:
            for edge in graph.parents(asset):
                for offset in range(edge.start, edge.end + 1):
                    read = (edge.parent, day + timedelta(days=offset))
                    if read in key_of:
                        after.add(key_of[read])
        run = PlannedRun(
            day=day,
            assets=tuple(assets),
            failed=tuple(a for a in assets if (a, day) in roots),
            after=tuple(sorted(after)),
            part=part,
        )
        runs.append(run)
        key_of.update({(a, day): run.key for a in assets})
    return Plan(runs=_merge_ranges(runs, rank, may_write))


def _merge_ranges(
    runs: list[PlannedRun], rank: Mapping[str, int], may_write: Callable[[str, date], bool]
) -> list[PlannedRun]:
    """Merge refresh runs of consecutive dates and the same depth into one ranged run.

    Same depth (longest chain of runs it waits for) means neither waits on the other, even
    through a third run, so the merged run can wait for the union of what they waited for.
    A ranged run writes every selected asset on every date: dates whose refresh needs fewer
    assets (a shorter lookback stops reading the healed day sooner) join only when the extra
    partitions ``may_write`` (they exist and read nothing broken: recomputing them gives the
    same rows) and no other run of the plan writes them (two runs of one plan writing one
    partition would race, or write it twice), else the range ends there.
    """
    depth_of = _depths(runs)
    groups = _ranges(runs, depth_of, rank, may_write)
    groups += [([r], r.assets) for r in runs if r.failed]
    return _ranged_runs(groups, depth_of)


def _depths(runs: list[PlannedRun]) -> Callable[[str], int]:
    """A run's depth by key: the longest chain of runs of the plan it waits for."""
    by_key = {r.key: r for r in runs}
    depth: dict[str, int] = {}

    def depth_of(key: str) -> int:
        if key not in depth:
            depth[key] = 1 + max((depth_of(k) for k in by_key[key].after), default=-1)
        return depth[key]

    return depth_of


def _ranges(
    runs: list[PlannedRun],
    depth_of: Callable[[str], int],
    rank: Mapping[str, int],
    may_write: Callable[[str, date], bool],
) -> list[tuple[list[PlannedRun], tuple[str, ...]]]:
    """The refresh runs grouped into ranges of consecutive dates, each with its assets."""
    planned = {p for r in runs for p in r.partitions}

    def union(
        group: list[PlannedRun], assets: tuple[str, ...], run: PlannedRun
    ) -> tuple[str, ...] | None:
        """The range's assets with ``run`` joined, or None if it may not join."""
        joined = tuple(sorted({*assets, *run.assets}, key=rank.__getitem__))
        extra = [(a, r.day) for r in (*group, run) for a in joined if a not in r.assets]
        if all(p not in planned and may_write(*p) for p in extra):
            return joined
        return None

    groups: list[tuple[list[PlannedRun], tuple[str, ...]]] = []
    refresh = sorted(
        (r for r in runs if not r.failed), key=lambda r: (depth_of(r.key), r.day, r.part)
    )
    for run in refresh:
        # Several ranges can grow side by side (one date's parts wait for different dates):
        # the run extends one that ended the day before, at its depth, its own assets first.
        ends = [
            i
            for i, (group, _) in enumerate(groups)
            if depth_of(group[-1].key) == depth_of(run.key) and (run.day - group[-1].day).days == 1
        ]
        ends.sort(key=lambda i: groups[i][1] != run.assets)
        for i in ends:
            joined = union(*groups[i], run)
            if joined is not None:
                groups[i] = ([*groups[i][0], run], joined)
                break
        else:
            groups.append(([run], run.assets))
    return groups


def _ranged_runs(
    groups: list[tuple[list[PlannedRun], tuple[str, ...]]], depth_of: Callable[[str], int]
) -> list[PlannedRun]:
    """One run per group (a group of several: one ranged run), waits renamed to match,
    each run after every run it waits for (merged runs keep their members' depth)."""
    renamed: dict[str, str] = {}
    first_key: dict[str, str] = {}
    out = []
    for group, assets in groups:
        first = group[0]
        if len(group) == 1:
            out.append(first)
            first_key[first.key] = first.key
            continue
        members = {r.key for r in group}
        after = {k for r in group for k in r.after} - members
        ranged = PlannedRun(
            day=first.day,
            assets=assets,
            failed=(),
            after=tuple(sorted(after)),
            part=first.part,
            last=group[-1].day,
        )
        renamed.update({k: ranged.key for k in members})
        first_key[ranged.key] = first.key
        out.append(ranged)
    out = [replace(r, after=tuple(sorted({renamed.get(k, k) for k in r.after}))) for r in out]
    return sorted(out, key=lambda r: (depth_of(first_key[r.key]), r.day, r.part))


def inputs(
    requested: Iterable[Partition],
    graph: Graph,
    last_day: date,
    broken_inputs: Callable[[str, date], Iterable[Partition]],
) -> set[Partition]:
    """The broken partitions ``requested`` reads, directly or through one another, that a
    heal of them repairs first: the plan's own root-cause rule, with nothing refreshed
    downstream. What a backfill loads before its range."""
    mine = set(requested)
    found = plan(mine, graph, lambda asset, day: False, last_day, broken_inputs)
    return {(a, r.day) for r in found.runs for a in r.failed} - mine


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
