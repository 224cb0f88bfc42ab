"""Per-partition row-count and freshness checks for every table, built from the registry.

They run in the same run that materialises a partition (a freshly written short partition is
flagged at once); the sweep (sweep.py) evaluates the same logic over a watch window.
"""

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import dagster as dg

from selfheal_dagster.adapters.warehouse import read_window
from selfheal_dagster.core.checks import (
    CHECKS,
    EVALUATORS,
    READ_AT,
    CheckOutcome,
    tables_for,
    window_start,
)
from selfheal_dagster.core.dates import now_utc
from selfheal_dagster.defs.accepted import accepted
from selfheal_dagster.defs.partitions import daily_partitions, job_context
from selfheal_dagster.defs.resources import Phase1SourceResource, WarehouseResource
from selfheal_dagster.instance import check_records
from selfheal_dagster.tables import TABLES, Table, read_same_date

DESCRIPTIONS = {
    "row_count": (
        "Rows for the date against an expectation from the schedule, in both directions: zero "
        "on a no-game date; at least a floor and at most a ceiling per scheduled game (what one "
        "game can produce), both tightened by the table's typical rows per game once history "
        "exists. Too few is short, too many a spike (a doubled load)."
    ),
    "freshness": (
        "Loaded by its deadline and not older than the newest load of any upstream partition "
        "it reads. Missing after the deadline or stale fails; present but late passes, with "
        "the delay in its metadata."
    ),
    "key": (
        "The table's row key is never NULL and never appears twice in the date's partition "
        "(a doubled load, a retried call whose first try also landed, a manual insert); the "
        "number of duplicated keys and one example in its metadata."
    ),
}


def metadata(values: dict[str, Any]) -> dict[str, dg.MetadataValue]:
    out: dict[str, dg.MetadataValue] = {}
    for key, value in values.items():
        if value is None:
            out[key] = dg.MetadataValue.null()
        elif isinstance(value, datetime):
            out[key] = dg.MetadataValue.timestamp(value)
        elif isinstance(value, bool | int | float | str):
            out[key] = value
        else:
            out[key] = dg.MetadataValue.text(str(value))
    return out


def check_result(outcome: CheckOutcome, read_at: datetime) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.reason,
        metadata=metadata({**outcome.metadata, READ_AT: read_at}),
    )


def check_evaluation(
    outcome: CheckOutcome, read_at: datetime, targets: Mapping[str, object] | None = None
) -> dg.AssetCheckEvaluation:
    """The same result as an event, for runs that evaluate checks without materialising;
    ``targets``: the partitions' latest materialisations (``check_records.targets``)."""
    partition = outcome.day.isoformat()
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(outcome.table.key_path),
        check_name=outcome.check,
        passed=outcome.passed,
        description=outcome.reason,
        metadata=metadata({**outcome.metadata, READ_AT: read_at}),
        partition=partition,
        target_materialization_data=(targets or {}).get(partition),
    )


def check_key(table: Table, name: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(dg.AssetKey(table.key_path), name)


def partition_check(table: Table, name: str) -> dg.AssetChecksDefinition:
    # Partitioned checks are a preview feature in Dagster 1.13; they are what gives per-date
    # results in the UI, so we accept the preview and silence its warning here only.
    # A short partition that a later step of the same run reads stops the run there.
    decorate_blocking = name == "row_count" and read_same_date(table)
    with accepted(dg.PreviewWarning):
        decorate = dg.asset_check(
            asset=dg.AssetKey(table.key_path),
            name=name,
            partitions_def=daily_partitions,
            description=DESCRIPTIONS[name],
            blocking=decorate_blocking,
        )

    def _check(
        context: dg.AssetCheckExecutionContext,
        warehouse: WarehouseResource,
        source: Phase1SourceResource,
    ) -> dg.AssetCheckResult | None:
        op_context = context.op_execution_context
        days = [date.fromisoformat(k) for k in op_context.partition_keys]
        read_at = now_utc()
        job = job_context(op_context, "check", table)
        # Rows and keys counted in the tables, not metadata; the key check reads its own only.
        tables = [table] if name == "key" else tables_for(table)
        with warehouse.open(job) as wh:
            window = read_window(wh, window_start(days), days[-1], tables)
        outcomes = [
            EVALUATORS[name](table, day, window, read_at, source.scheduled_games) for day in days
        ]
        if len(days) == 1:
            return check_result(outcomes[0], read_at)
        # A range run: Dagster would file a returned result under no partition, so each
        # date's result is logged under its own partition, as the sweep does.
        written = check_records.targets(op_context.instance, dg.AssetKey(table.key_path), days)
        for outcome in outcomes:
            op_context.log_event(check_evaluation(outcome, read_at, written))
        failed = [o for o in outcomes if not o.passed]
        if failed and decorate_blocking:
            raise dg.Failure(
                description=f"{table.key} {name} failed on {len(failed)} of {len(days)} dates: "
                + "; ".join(f"{o.day}: {o.reason}" for o in failed[:5]),
                allow_retries=False,
            )
        return None

    with accepted(dg.PreviewWarning):
        return decorate(_check)


defs = dg.Definitions(asset_checks=[partition_check(t, name) for t in TABLES for name in CHECKS])
