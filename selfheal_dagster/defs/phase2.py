"""Phase 2 assets: one per raw table, each loading its Phase 1 feed for a date or a range.

A range run fetches every date, then writes the dates fetched in one atomic write. A date the
source fails on fails the step, naming it; the other dates are written and materialised, so
the failure holds up only what reads that date.
"""

import dagster as dg

from selfheal_dagster.adapters.settings import Settings
from selfheal_dagster.defs.partitions import (
    asset_options,
    games_by_day,
    partition_days,
    span,
    written,
    written_before_failure,
)
from selfheal_dagster.defs.resources import Phase1SourceResource, WarehouseResource
from selfheal_dagster.tables import Table, in_phase


class SourceFailed(RuntimeError):
    """The source could not deliver some dates of a range; the others were written."""


def phase2_asset(table: Table, warehouse_kind: str) -> dg.AssetsDefinition:
    @dg.asset(**asset_options(table, {warehouse_kind, "python"}))
    def _load(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        source: Phase1SourceResource,
    ) -> dg.MaterializeResult:
        days = partition_days(context)
        wh = warehouse.open()
        if len(days) == 1:  # one date: exactly one load, its error raised as it is
            result = source.load(table, days[0], wh)
            context.log.info(f"{table.key} {days[0]}: {result.rows} rows loaded")
            return written(result, games_by_day(wh, days), days)
        loaded = source.load_range(table, days, wh)
        done = [d for d in days if d not in loaded.failed]
        games = games_by_day(wh, days)
        if loaded.written is not None:
            context.log.info(f"{table.key} {span(done)}: {loaded.written.rows} rows loaded")
        if loaded.failed:
            written_before_failure(context, table, loaded.written, games, done)
            first = sorted(loaded.failed.items())
            raise SourceFailed(
                f"{table.key}: {len(first)} of {len(days)} dates not loaded: "
                + "; ".join(f"{d}: {why}" for d, why in first[:5])
                + (f"; and {len(first) - 5} more" if len(first) > 5 else "")
            )
        assert loaded.written is not None
        return written(loaded.written, games, days)

    return _load


@dg.definitions
def defs() -> dg.Definitions:
    kind = Settings.from_env().warehouse_kind
    return dg.Definitions(assets=[phase2_asset(t, kind) for t in in_phase(2)])
