"""Phase 2 assets: one per raw table, each loading its Phase 1 feed for a date or a range.

A range run fetches every date, then writes the dates fetched in one atomic write. A date the
source fails on fails the step, naming it; the other dates are written and materialised, so
the failure holds up only what reads that date.
"""

import dagster as dg

from selfheal_dagster.adapters.settings import Settings
from selfheal_dagster.core.dates import range_text
from selfheal_dagster.core.text import listed
from selfheal_dagster.defs import partitions
from selfheal_dagster.defs.resources import Phase1SourceResource, WarehouseResource
from selfheal_dagster.tables import Table, in_phase


class SourceFailed(RuntimeError):
    """The source could not deliver some dates of a range; the others were written."""


def phase2_asset(table: Table, warehouse_kind: str) -> dg.AssetsDefinition:
    @partitions.table_asset(table, {warehouse_kind, "python"})
    def _load(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        source: Phase1SourceResource,
    ) -> dg.MaterializeResult:
        with partitions.writing(context, warehouse, table) as (days, job, wh):
            if len(days) == 1:  # one date: exactly one load, its error raised as it is
                result = source.load(table, days[0], wh, job)
                context.log.info(f"{table.key} {days[0]}: {result.rows} rows loaded")
                return partitions.written(result, partitions.games_by_day(wh, days), days)
            loaded = source.load_range(table, days, wh, job)
            games = partitions.games_by_day(wh, days)
        done = [d for d in days if d not in loaded.failed]
        if loaded.written is not None:
            context.log.info(f"{table.key} {range_text(done)}: {loaded.written.rows} rows loaded")
        error = None
        if loaded.failed:
            first = sorted(loaded.failed.items())
            error = SourceFailed(
                f"{table.key}: {len(first)} of {len(days)} dates not loaded: "
                + listed([f"{d}: {why}" for d, why in first], 5)
            )
        return partitions.finished(
            context, table, loaded.written, games=games, days=days, done=done, error=error
        )

    return _load


@dg.definitions
def defs() -> dg.Definitions:
    kind = Settings.from_env().warehouse_kind
    return dg.Definitions(assets=[phase2_asset(t, kind) for t in in_phase(2)])
