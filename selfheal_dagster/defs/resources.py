"""The ONE place that maps the environment (``SELFHEAL_ENV``) to resources and executor.

Local (the default) is the embedded DuckDB warehouse fed by the simulated league; nothing here
connects to anything at import or load time: resources open connections when an asset runs.
"""

from datetime import date

import dagster as dg
from pydantic import Field

from selfheal_dagster.lib.league import League, parse_outages, parse_short
from selfheal_dagster.lib.settings import Settings
from selfheal_dagster.lib.warehouse import Warehouse, WriteResult
from selfheal_dagster.tables import Table


class WarehouseResource(dg.ConfigurableResource):
    """Where the tables live. Subclasses open one engine behind the same interface."""

    def open(self) -> Warehouse:
        raise NotImplementedError


class DuckDBWarehouseResource(WarehouseResource):
    path: str = Field(description="Path of the DuckDB file that holds the local warehouse.")
    lock_timeout_seconds: float = Field(
        default=120.0,
        description="How long to wait for another process holding the DuckDB file lock.",
    )

    def open(self) -> Warehouse:
        from selfheal_dagster.lib.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(self.path, lock_timeout=self.lock_timeout_seconds)


class Phase1SourceResource(dg.ConfigurableResource):
    """The Phase 1 source: loads one Phase 2 table for one date into the warehouse."""

    def load(self, table: Table, day: date, warehouse: Warehouse) -> WriteResult:
        raise NotImplementedError

    def scheduled_games(self, day: date) -> int | None:
        """Games the source's calendar has on ``day``; None when it cannot tell."""
        return None


class SimulatedLeagueResource(Phase1SourceResource):
    seed: int = Field(description="Seed of the simulated league; same seed, same rows.")
    outages: str = Field(
        default="",
        description="Comma list of table@YYYY-MM-DD that fail every time they are fetched.",
    )
    short: str = Field(
        default="",
        description="Comma list of table@YYYY-MM-DD:FRACTION delivered with only that fraction.",
    )

    def league(self) -> League:
        return League(self.seed, outages=parse_outages(self.outages), short=parse_short(self.short))

    def scheduled_games(self, day: date) -> int | None:
        return len(self.league().games_on(day))

    def load(self, table: Table, day: date, warehouse: Warehouse) -> WriteResult:
        rows = self.league().feed(table.feed or table.name, day)
        return warehouse.replace_partition(table, day, rows)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": DuckDBWarehouseResource(path=str(settings.duckdb_path)),
        "source": SimulatedLeagueResource(
            seed=settings.league_seed,
            outages=settings.league_outages,
            short=settings.league_short,
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    settings = Settings.from_env()
    return dg.Definitions(
        resources=build_resources(settings),
        # One process per run locally: DuckDB admits one writer process, and each step
        # process would re-import the code location.
        executor=dg.multiprocess_executor if settings.is_prod else dg.in_process_executor,
    )
