"""Phase 4 assets: SQL processors run inside the warehouse, in the registry's dependency order.

A processor for date D reads Phase 2 history strictly before D (its lookback window) plus the
schedule and odds of D; the partition mappings declared from the registry say exactly that.
Inputs before outputs: on a game day, a processor whose input partitions are missing or short
fails naming them, and the partition keeps its previous rows.
"""

import dagster as dg

from selfheal_dagster.defs.partitions import (
    asset_options,
    partition_day,
    written,
)
from selfheal_dagster.defs.resources import (
    Phase1SourceResource,
    Phase4Resource,
    WarehouseResource,
)
from selfheal_dagster.lib.checks import MissingInput, input_problems, input_window
from selfheal_dagster.lib.coverage import read_window
from selfheal_dagster.lib.settings import Settings
from selfheal_dagster.tables import Table, execution_order, in_phase


def phase4_asset(table: Table, warehouse_kind: str) -> dg.AssetsDefinition:
    @dg.asset(**asset_options(table, {warehouse_kind, "sql"}))
    def _process(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        phase4: Phase4Resource,
        source: Phase1SourceResource,
    ) -> dg.MaterializeResult:
        day = partition_day(context)
        wh = warehouse.open()
        start, tables = input_window(table, day)
        problems = input_problems(
            table, day, read_window(wh, start, day, tables), source.scheduled_games
        )
        if problems:
            raise MissingInput(f"{table.key} {day} not computed: " + "; ".join(problems))
        result, via = phase4.run(table, day, wh)
        context.log.info(f"{table.key} {day}: {result.rows} rows computed by {via}")
        return written(result, games=wh.games_on(day))

    return _process


@dg.definitions
def defs() -> dg.Definitions:
    kind = Settings.from_env().warehouse_kind
    return dg.Definitions(assets=[phase4_asset(t, kind) for t in execution_order(in_phase(4))])
