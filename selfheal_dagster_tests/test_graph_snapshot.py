"""A snapshot of the asset graph Dagster builds from the registry: keys, dependencies and their
partition mappings, checks and their blocking flag, kinds, owners, tags, partitions and
backfill policies. A change to any of them shows in review as a change to
``snapshots/asset_graph.json``; regenerate it with ``SELFHEAL_UPDATE_SNAPSHOT=1 pytest
selfheal_dagster_tests/test_graph_snapshot.py`` and read the diff."""

import copy
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


def test_a_changed_mapping_or_blocking_flag_shows_as_a_difference(defs):
    reviewed = snapshot(defs.resolve_asset_graph())
    [lookback] = [
        (asset, parent)
        for asset, spec in reviewed.items()
        for parent, mapping in spec["deps"].items()
        if mapping.startswith("time window")
    ][:1]
    changed = copy.deepcopy(reviewed)
    changed[lookback[0]]["deps"][lookback[1]] = "time window -7..-1"
    [asset_with_checks] = [a for a, spec in reviewed.items() if spec["checks"]][:1]
    name = sorted(changed[asset_with_checks]["checks"])[0]
    blocking = changed[asset_with_checks]["checks"][name]["blocking"]
    changed[asset_with_checks]["checks"][name]["blocking"] = not blocking
    found = differences(reviewed, changed)
    assert len(found) == 2
    assert any(f"{lookback[0]}/deps/{lookback[1]}:" in line for line in found)
    assert any(f"{asset_with_checks}/checks/{name}/blocking:" in line for line in found)
