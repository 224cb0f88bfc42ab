"""Per-partition row-count and freshness checks for every table, built from the registry.

They run in the same run that materialises a partition (a freshly written short partition is
flagged at once); the sweep (sweep.py) evaluates the same logic over a watch window.
"""

from collections.abc import Iterator, Mapping
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
        asset_key=dg.AssetKey(outcome.table.key_path),
        check_name=outcome.check,
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


def table_checks(table: Table) -> dg.AssetChecksDefinition:
    """The table's three checks in one step: one warehouse read serves them all (a step and a
    read apiece was three of each per table per run, and in production three processes).

    Each check keeps its own key, result and history; a person can run any subset of them.
    Partitioned checks are a preview feature in Dagster 1.13; they are what gives per-date
    results in the UI, so we accept the preview and silence its warning here only.
    A short partition that a later step of the same run reads stops the run there: its row
    count is a blocking check.
    """
    blocking = read_same_date(table)
    asset = dg.AssetKey(table.key_path)
    with accepted(dg.PreviewWarning):
        specs = [
            dg.AssetCheckSpec(
                name,
                asset=asset,
                description=DESCRIPTIONS[name],
                blocking=blocking and name == "row_count",
                partitions_def=daily_partitions,
            )
            for name in CHECKS
        ]

    def _checks(
        context: dg.AssetCheckExecutionContext,
        warehouse: WarehouseResource,
        source: Phase1SourceResource,
    ) -> Iterator[dg.AssetCheckResult]:
        op_context = context.op_execution_context
        selected = [n for n in CHECKS if check_key(table, n) in context.selected_asset_check_keys]
        days = [date.fromisoformat(k) for k in op_context.partition_keys]
        read_at = now_utc()
        job = job_context(op_context, "check", table)
        # Rows and keys counted in the tables, not metadata; the key check reads its own only.
        tables = [table] if selected == ["key"] else tables_for(table)
        with warehouse.open(job) as wh:
            window = read_window(wh, window_start(days), days[-1], tables)
        outcomes = {
            name: [
                EVALUATORS[name](table, day, window, read_at, source.scheduled_games)
                for day in days
            ]
            for name in selected
        }
        if len(days) == 1:
            for name in selected:
                yield check_result(outcomes[name][0], read_at)
            return
        # A range run: Dagster would file a returned result under no partition, so each
        # date's result is logged under its own partition, as the sweep does.
        written = check_records.targets(op_context.instance, asset, days)
        for name in selected:
            for outcome in outcomes[name]:
                op_context.log_event(check_evaluation(outcome, read_at, written))
        failed = [o for o in outcomes.get("row_count", ()) if not o.passed]
        if failed and blocking:
            raise dg.Failure(
                description=f"{table.key} row_count failed on {len(failed)} of {len(days)} "
                "dates: " + "; ".join(f"{o.day}: {o.reason}" for o in failed[:5]),
                allow_retries=False,
            )

    with accepted(dg.PreviewWarning):
        return dg.multi_asset_check(name=f"{table.name}_checks", specs=specs, can_subset=True)(
            _checks
        )


defs = dg.Definitions(asset_checks=[table_checks(t) for t in TABLES])
