"""Game-date partitions and the partition mappings derived from the registry."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import dagster as dg

from selfheal_dagster.adapters.settings import season_start
from selfheal_dagster.adapters.warehouse import Warehouse, WriteResult
from selfheal_dagster.core.dates import range_text
from selfheal_dagster.core.job_context import JobContext
from selfheal_dagster.core.names import ATTEMPT, CORRELATION_ID, PHASE
from selfheal_dagster.defs.accepted import accepted
from selfheal_dagster.tables import (
    BY_NAME,
    PHASE_GROUPS,
    PHASE_OWNERS,
    SCHEDULE,
    Table,
    Upstream,
    reads_text,
)

# end_offset=1: today's (US/Eastern) partition exists, so Phase 4 can run before tip-off.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=season_start().isoformat(),
    timezone="America/New_York",
    end_offset=1,
)


def partition_mapping(upstream: Upstream) -> dg.PartitionMapping | None:
    """Same date, or the N dates strictly before D for a lookback read."""
    if not upstream.is_lookback:
        return None
    # The first days of the season look back before the first partition; that is expected.
    with accepted(dg.BetaWarning):
        return dg.TimeWindowPartitionMapping(
            start_offset=-upstream.lookback_days,
            end_offset=-1,
            allow_nonexistent_upstream_partitions=True,
        )


def asset_deps(table: Table) -> list[dg.AssetDep]:
    return [
        dg.AssetDep(dg.AssetKey(BY_NAME[u.table].key_path), partition_mapping=partition_mapping(u))
        for u in table.upstream
    ]


def asset_spec(table: Table, kinds: set[str]) -> dg.AssetSpec:
    """What every table's asset declares, typed, from the registry: key, group, partitions,
    lineage with its partition mappings, kinds, owners, tags, description and metadata."""
    return dg.AssetSpec(
        key=table.key_path,
        group_name=PHASE_GROUPS[table.phase],
        partitions_def=daily_partitions,
        deps=asset_deps(table),
        kinds=kinds,
        description=description(table),
        metadata=asset_metadata(table),
        owners=[PHASE_OWNERS[table.phase]],
        tags={PHASE: str(table.phase)},
    )


def table_asset(table: Table, kinds: set[str]):
    """The decorator of a table's asset: its spec, its op named as ``@dg.asset`` names one
    (``nba_raw__bdl_player_boxscores``), a range of dates computed in one run."""
    spec = asset_spec(table, kinds)
    return dg.multi_asset(
        specs=[spec], name=spec.key.to_python_identifier(), backfill_policy=BACKFILL_POLICY
    )


# `backfill_policy` is beta in Dagster 1.13 and warns on every asset definition; it is what
# `--partition-range` and ranged runs need: accepted knowingly (``defs/accepted.py``).
# Every asset computes a range of dates in one run (one load, one SQL statement): a backfill
# or heal of N dates is one run, not N. Selected together, Phase 2 then Phase 4 of the range.
BACKFILL_POLICY = dg.BackfillPolicy.single_run()


def partition_days(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> list[date]:
    """The dates a run computes: its one partition, or every date of its partition range."""
    return [date.fromisoformat(k) for k in context.partition_keys]


def job_context(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    component: str,
    table: Table | None = None,
) -> JobContext:
    """Whom a run's warehouse jobs and service calls serve: its table, run, heal, attempt."""
    tags = context.run.tags
    attempt = tags.get(ATTEMPT, "")
    return JobContext(
        component=component,
        asset=table.name if table else "",
        run_id=context.run.run_id,
        correlation_id=tags.get(CORRELATION_ID, ""),
        attempt=int(attempt) if attempt.isdigit() else 0,
    )


@contextmanager
def writing(
    context: dg.AssetExecutionContext, warehouse, table: Table
) -> Iterator[tuple[list[date], JobContext, Warehouse]]:
    """A table asset's step: its dates, whom its jobs serve, its warehouse (closed after)."""
    days = partition_days(context)
    job = job_context(context, "asset", table)
    with warehouse.open(job) as wh:
        yield days, job, wh


def games_by_day(warehouse, days: list[date]) -> dict[date, int]:
    """Games per date as the warehouse's schedule has them: one query for the whole range."""
    stats = warehouse.partition_stats(SCHEDULE, days[0], days[-1])
    return {day: stats[day].rows if day in stats else 0 for day in days}


def description(table: Table) -> str:
    """The registry's description, and what the table reads over which dates (the UI does
    not draw partition mappings)."""
    if not table.upstream:
        return table.description
    return f"{table.description}\n\nReads, for game date D:\n{reads_list(table)}"


def reads_list(table: Table) -> str:
    return "\n".join(f"- {line}" for line in reads_text(table))


def asset_metadata(table: Table) -> dict[str, object]:
    reads = {"reads": dg.MetadataValue.md(reads_list(table))}
    return {
        **(reads if table.upstream else {}),
        "dagster/table_name": f"{table.dataset}.{table.name}",
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(name=c.name, type=c.type, description=c.description or None)
                for c in table.columns
            ]
        ),
        "partition_column": table.partition_column,
    }


def _when(loaded_at) -> dg.MetadataValue:
    return dg.MetadataValue.timestamp(loaded_at) if loaded_at else dg.MetadataValue.null()


def day_metadata(rows: int, games: int, loaded_at) -> dict[str, object]:
    """What a person wants to see on one date's write: rows, games that day, load time."""
    return {
        "dagster/row_count": rows,
        "games": games,
        "loaded_at": _when(loaded_at),
    }


def written(result: WriteResult, games: dict[date, int], days: list[date]) -> dg.MaterializeResult:
    """The materialisation of a one-date run as before. A range run's result goes to each of
    its partitions (Dagster records one materialisation per partition), so it says the range;
    each date's own row count is in that partition's row-count check result, which a range
    run records per partition. (Not an observation per date as well: every event costs a
    storage write, and a season is 1,620 partitions.)"""
    if len(days) == 1:
        return dg.MaterializeResult(
            metadata=day_metadata(result.rows_on(days[0]), games[days[0]], result.loaded_at)
        )
    return dg.MaterializeResult(
        metadata={
            "range": range_text(days),
            "dates": len(days),
            "range_rows": result.rows,
            "loaded_at": _when(result.loaded_at),
        }
    )


def finished(
    context: dg.AssetExecutionContext,
    table: Table,
    result: WriteResult | None,
    *,
    games: dict[date, int],
    days: list[date],
    done: list[date],
    error: Exception | None,
) -> dg.MaterializeResult:
    """A step's end: its result; or, with ``error``, the dates it wrote (``done``)
    materialised first, then the error, so only the other dates show as failed."""
    if error is not None:
        written_before_failure(context, table, result, games, done)
        raise error
    assert result is not None
    return written(result, games, days)


def written_before_failure(
    context: dg.AssetExecutionContext,
    table: Table,
    result: WriteResult | None,
    games: dict[date, int],
    days: list[date],
) -> None:
    """A range step about to fail still wrote ``days``: each is materialised, so Dagster
    shows those partitions as written and only the others as failed."""
    if result is None:
        return
    key = dg.AssetKey(table.key_path)
    for day in days:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=key,
                partition=day.isoformat(),
                metadata=day_metadata(result.rows_on(day), games[day], result.loaded_at),
            )
        )
