"""A snapshot of the asset graph Dagster builds from the registry: keys, dependencies and their
partition mappings, checks and their blocking flag, kinds, owners, tags, partitions and
backfill policies. A change to any of them shows in review as a change to
``snapshots/asset_graph.json``; regenerate it with ``SELFHEAL_UPDATE_SNAPSHOT=1 pytest
selfheal_dagster_tests/assets/test_graph_snapshot.py`` and read the diff."""

import json
import os
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def mapping_text(mapping) -> str:
    if isinstance(mapping, dg.TimeWindowPartitionMapping):
        exists = (
            ", nonexistent upstream allowed"
            if mapping.allow_nonexistent_upstream_partitions
            else ""
        )
        return f"time window {mapping.start_offset}..{mapping.end_offset}{exists}"
    return type(mapping).__name__


def partitions_text(partitions) -> str | None:
    if partitions is None:
        return None
    if isinstance(partitions, dg.TimeWindowPartitionsDefinition):
        return (
            f"{partitions.cron_schedule} from {partitions.start:%Y-%m-%d} {partitions.timezone}, "
            f"end offset {partitions.end_offset}"
        )
    return type(partitions).__name__


def policy_text(policy) -> str | None:
    if policy is None:
        return None
    return f"{policy.policy_type.value} (max {policy.max_partitions_per_run} per run)"


def snapshot(graph) -> dict:
    """The graph as plain data, sorted, every entry readable in a diff."""
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        tags = dict(node.tags)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(
                k.removeprefix("dagster/kind/") for k in tags if k.startswith("dagster/kind/")
            ),
            "owners": list(node.owners),
            "tags": {k: v for k, v in sorted(tags.items()) if not k.startswith("dagster/kind/")},
            "partitions": partitions_text(node.partitions_def),
            "backfill_policy": policy_text(node.backfill_policy),
            "deps": {
                parent.to_user_string(): mapping_text(graph.get_partition_mapping(key, parent))
                for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string())
            },
            "checks": {
                check.name: {"blocking": graph.get_check_spec(check).blocking}
                for check in sorted(graph.asset_check_keys, key=lambda c: c.name)
                if check.asset_key == key
            },
        }
    return assets


def differences(old: dict, new: dict, path: str = "") -> list[str]:
    """One line per value that changed, was added or went away."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [f"{path}: {old!r} -> {new!r}"]
    out = []
    for k in sorted(set(old) | set(new)):
        where = f"{path}/{k}" if path else k
        if k not in new:
            out.append(f"{where}: removed")
        elif k not in old:
            out.append(f"{where}: added")
        else:
            out += differences(old[k], new[k], where)
    return out


def test_the_asset_graph_matches_its_reviewed_snapshot(defs):
    current = snapshot(defs.resolve_asset_graph())
    if os.environ.get("SELFHEAL_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    reviewed = json.loads(SNAPSHOT.read_text())
    assert differences(reviewed, current) == []


def tables_graph(resources):
    """The tables' assets and checks built again by the product's own factories."""
    from selfheal_dagster.defs import checks, phase2, phase4
    from selfheal_dagster.tables import TABLES, execution_order, in_phase

    assets = [phase2.phase2_asset(t, "duckdb") for t in in_phase(2)]
    assets += [phase4.phase4_asset(t, "duckdb") for t in execution_order(in_phase(4))]
    found = [checks.table_checks(t) for t in TABLES]
    return dg.Definitions(
        assets=assets, asset_checks=found, resources=resources
    ).resolve_asset_graph()


def test_a_changed_mapping_or_blocking_flag_fails_the_snapshot(defs, monkeypatch):
    from selfheal_dagster.defs import checks, partitions

    reviewed = json.loads(SNAPSHOT.read_text())
    reviewed = {k: v for k, v in reviewed.items() if k in snapshot(tables_graph(defs.resources))}
    assert differences(reviewed, snapshot(tables_graph(defs.resources))) == []
    # A lookback of 7 dates instead of the registry's: every lookback dependency shows.
    original = partitions.partition_mapping

    def week(upstream):
        mapping = original(upstream)
        return dg.TimeWindowPartitionMapping(-7, -1) if mapping is not None else None

    with monkeypatch.context() as m:
        m.setattr(partitions, "partition_mapping", week)
        changed = differences(reviewed, snapshot(tables_graph(defs.resources)))
    assert changed and all("/deps/" in line and "time window -7..-1" in line for line in changed)
    # The row-count check blocking on every table instead of on those read the same date.
    with monkeypatch.context() as m:
        m.setattr(checks, "read_same_date", lambda table: True)
        changed = differences(reviewed, snapshot(tables_graph(defs.resources)))
    assert changed and all(line.endswith("/blocking: False -> True") for line in changed)
    assert all("/checks/row_count/" in line for line in changed)
