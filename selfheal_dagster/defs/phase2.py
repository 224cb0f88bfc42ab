"""Phase 2 assets: one per raw table, each loading its Phase 1 feed for one game date."""

import dagster as dg

from selfheal_dagster.defs.partitions import (
    asset_options,
    partition_day,
    written,
)
from selfheal_dagster.defs.resources import Phase1SourceResource, WarehouseResource
from selfheal_dagster.lib.settings import Settings
from selfheal_dagster.tables import Table, in_phase


def phase2_asset(table: Table, warehouse_kind: str) -> dg.AssetsDefinition:
    @dg.asset(**asset_options(table, {warehouse_kind, "python"}))
    def _load(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        source: Phase1SourceResource,
    ) -> dg.MaterializeResult:
        day = partition_day(context)
        wh = warehouse.open()
        result = source.load(table, day, wh)
        context.log.info(f"{table.key} {day}: {result.rows} rows loaded")
        return written(result, games=wh.games_on(day))

    return _load


@dg.definitions
def defs() -> dg.Definitions:
    kind = Settings.from_env().warehouse_kind
    return dg.Definitions(assets=[phase2_asset(t, kind) for t in in_phase(2)])
