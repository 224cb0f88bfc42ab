"""Game-date partitions and the partition mappings derived from the registry."""

import warnings
from datetime import date

import dagster as dg

from selfheal_dagster.lib.settings import season_start
from selfheal_dagster.lib.warehouse import WriteResult
from selfheal_dagster.tables import BY_NAME, PHASE_GROUPS, Table, Upstream

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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
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


def asset_options(table: Table, kinds: set[str]) -> dict[str, object]:
    """What every table's asset declares, from the registry: key, group, partitions, lineage."""
    return {
        "key": table.key_path,
        "group_name": PHASE_GROUPS[table.phase],
        "partitions_def": daily_partitions,
        "deps": asset_deps(table),
        "kinds": kinds,
        "description": table.description,
        "metadata": asset_metadata(table),
        "tags": {"selfheal/phase": str(table.phase)},
    }


def partition_day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def asset_metadata(table: Table) -> dict[str, object]:
    return {
        "dagster/table_name": f"{table.dataset}.{table.name}",
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(name=c.name, type=c.type, description=c.description or None)
                for c in table.columns
            ]
        ),
        "partition_column": table.partition_column,
    }


def written(result: WriteResult, games: int) -> dg.MaterializeResult:
    """What a person wants to see on a materialisation: rows, games that day, load time."""
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.rows,
            "games": games,
            "loaded_at": dg.MetadataValue.timestamp(result.loaded_at),
        }
    )
