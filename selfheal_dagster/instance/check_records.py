"""Reading per-partition asset check results back from the Dagster instance.

Private Dagster API, on purpose: Dagster 1.13 exposes per-partition check history only on
``instance.event_log_storage`` (``get_asset_check_execution_history``,
``get_latest_asset_check_execution_by_key``), and the types those take and return (the
partition filter, the execution record and its status, a check result's target
materialisation) only under ``dagster._core``; no public API serves them. Every private
name the check records need is imported here, and
``selfheal_dagster_tests/unit/test_private_api.py`` fails loudly on a Dagster upgrade that
moves or changes one of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

FAILED = AssetCheckExecutionRecordStatus.FAILED
SUCCEEDED = AssetCheckExecutionRecordStatus.SUCCEEDED

__all__ = ["AssetCheckExecutionRecord", "FAILED", "SUCCEEDED"]


def history(
    instance: dg.DagsterInstance,
    key: dg.AssetCheckKey,
    day: date,
    limit: int = 20,
    failed_only: bool = False,
    passed_only: bool = False,
) -> Sequence[AssetCheckExecutionRecord]:
    """Results of one check for one partition, newest first."""
    status = {FAILED} if failed_only else ({SUCCEEDED} if passed_only else None)
    return instance.event_log_storage.get_asset_check_execution_history(
        key,
        limit=limit,
        status=status,
        partition_filter=PartitionKeyFilter(key=day.isoformat()),
    )


def latest_by_partition(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey], days: Iterable[date]
) -> dict[tuple[dg.AssetCheckKey, date], AssetCheckExecutionRecord]:
    """The newest result of each check for each date: one query per date, not per check."""
    out = {}
    for day in days:
        found = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            keys, partition_filter=PartitionKeyFilter(key=day.isoformat())
        )
        out.update({(key, day): record for key, record in found.items()})
    return out


def latest_result(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, day: date, look: int = 10
) -> AssetCheckExecutionRecord | None:
    """The newest evaluated result of one check for one partition (planned ones skipped)."""
    return next((r for r in history(instance, key, day, limit=look) if not is_planned(r)), None)


def evaluation(record: AssetCheckExecutionRecord) -> dg.AssetCheckEvaluation | None:
    """The evaluation a finished record holds (None while it is only planned)."""
    if record.event is None or record.event.dagster_event is None:
        return None
    data = record.event.dagster_event.event_specific_data
    return data if isinstance(data, dg.AssetCheckEvaluation) else None


def newer_than(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey], watermark: int, page: int = 200
) -> list[AssetCheckExecutionRecord]:
    """Every record with an id above ``watermark``, any status: reads only what is new, newest
    first per check, so the cost follows activity since the watermark, not history."""
    out = []
    for key in keys:
        cursor = None
        while True:
            batch = instance.event_log_storage.get_asset_check_execution_history(
                key, limit=page, cursor=cursor
            )
            fresh = [r for r in batch if r.id > watermark]
            out += fresh
            if len(batch) < page or len(fresh) < len(batch):
                break
            cursor = batch[-1].id
    return out


def newest_id(instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey]) -> int:
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    return max((r.id for r in latest.values()), default=0)


def is_planned(record: AssetCheckExecutionRecord) -> bool:
    return record.status == AssetCheckExecutionRecordStatus.PLANNED


def targets(instance: dg.DagsterInstance, asset_key: dg.AssetKey, days: Iterable[date]) -> dict:
    """The latest materialisation of each date's partition, as a check result's target.

    A result logged by a run that did not materialise the partition (the sweep, a ranged
    run's per-date results) must name it: Dagster shows a partition's check status only while
    the result targets the partition's latest materialisation. Two queries per asset.
    """
    Target = AssetCheckEvaluationTargetMaterializationData
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        partitions={d.isoformat() for d in days},
    )
    if not ids:
        return {}
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(ids.values())),
        limit=len(ids),
    ).records
    return {
        r.partition_key: Target(storage_id=r.storage_id, run_id=r.run_id, timestamp=r.timestamp)
        for r in found
    }
