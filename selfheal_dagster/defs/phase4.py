"""Phase 4 assets: SQL processors run inside the warehouse, in the registry's dependency order.

A processor for date D reads Phase 2 history strictly before D (its lookback window) plus the
schedule and odds of D; the partition mappings declared from the registry say exactly that.
A range is one statement over its dates. Inputs before outputs: a game day whose input
partitions are missing or short is not computed (it keeps its previous rows) and the step
fails naming them; the range's other dates are computed.
"""

import dagster as dg

from selfheal_dagster.adapters.settings import Settings
from selfheal_dagster.adapters.warehouse import read_window
from selfheal_dagster.core.checks import (
    MissingInput,
    broken_inputs,
    input_window,
    missing_inputs_detail,
    missing_inputs_line,
)
from selfheal_dagster.core.dates import range_text
from selfheal_dagster.defs import partitions
from selfheal_dagster.defs.resources import (
    Phase1SourceResource,
    Phase4Resource,
    WarehouseResource,
)
from selfheal_dagster.tables import Table, execution_order, in_phase


def phase4_asset(table: Table, warehouse_kind: str) -> dg.AssetsDefinition:
    @partitions.table_asset(table, {warehouse_kind, "sql"})
    def _process(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        phase4: Phase4Resource,
        source: Phase1SourceResource,
    ) -> dg.MaterializeResult:
        with partitions.writing(context, warehouse, table) as (days, job, wh):
            start, tables = input_window(table, days[0])
            # The inputs' rows counted in the tables (not metadata): a partition written a
            # moment ago is there.
            window = read_window(wh, start, days[-1], tables)
            problems = {
                day: found
                for day in days
                if (found := broken_inputs(table, day, window, source.scheduled_games))
            }
            ready = [d for d in days if d not in problems]
            result = None
            if ready:
                result, via = phase4.run(table, ready, wh, job)
                context.log.info(
                    f"{table.key} {range_text(ready)}: {result.rows} rows computed by {via}"
                )
            games = partitions.games_by_day(wh, days)
        error = None
        if problems:
            context.log.warning(missing_inputs_detail(table, problems))  # every date, kept
            error = MissingInput(missing_inputs_line(table, problems))
        return partitions.finished(
            context, table, result, games=games, days=days, done=ready, error=error
        )

    return _process


@dg.definitions
def defs() -> dg.Definitions:
    kind = Settings.from_env().warehouse_kind
    return dg.Definitions(assets=[phase4_asset(t, kind) for t in execution_order(in_phase(4))])
