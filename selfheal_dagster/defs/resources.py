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


class AlertsResource(dg.ConfigurableResource):
    """Where heal alerts go: Slack with a bot token, a Slack incoming webhook, or the log.

    The token and the webhook URL come from the environment (``dg.EnvVar``), so the UI shows
    only the variable's name; Slack clients are imported only when one is configured.
    """

    bot_token: str = Field(default="", description="Slack bot token (from SLACK_BOT_TOKEN).")
    channel: str = Field(default="", description="Channel the bot posts to (SLACK_CHANNEL).")
    webhook_url: str = Field(
        default="", description="Slack incoming-webhook URL (from SLACK_WEBHOOK_URL)."
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Base URL of Slack's Web API."
    )
    ui_url: str = Field(default="", description="Dagster UI base URL, for links to runs.")
    attempts: int = Field(default=3, description="Delivery attempts per alert.")
    timeout_seconds: float = Field(default=3.0, description="Timeout of each attempt.")
    max_retry_after_seconds: float = Field(
        default=5.0, description="Longest Retry-After (HTTP 429) honoured before giving up."
    )

    def sink(self, echo=None):
        """The configured destination; ``echo`` also receives log-sink alerts (sensor logs)."""
        from selfheal_dagster.lib import alerts

        delivery = alerts.Delivery(
            attempts=self.attempts,
            timeout_seconds=self.timeout_seconds,
            max_retry_after_seconds=self.max_retry_after_seconds,
        )
        if self.bot_token and self.channel:
            return alerts.BotSink(
                delivery=delivery, client_factory=self._bot_client, channel=self.channel
            )
        if self.webhook_url:
            return alerts.WebhookSink(delivery=delivery, url=self.webhook_url)
        return alerts.LogSink(echo)

    def _bot_client(self):
        from dagster_slack import SlackResource

        client = SlackResource(token=self.bot_token).get_client()
        client.base_url = self.slack_api_url
        return client

    def notifier(self, warehouse: Warehouse, echo=None):
        from selfheal_dagster.lib.alerts import Notifier

        link = (lambda run_id: f"{self.ui_url}/runs/{run_id}") if self.ui_url else None
        return Notifier(self.sink(echo), warehouse, link)


def alerts_resource(settings: Settings) -> AlertsResource:
    secrets: dict[str, object] = {}
    if settings.slack == "bot":
        secrets = {"bot_token": dg.EnvVar("SLACK_BOT_TOKEN"), "channel": dg.EnvVar("SLACK_CHANNEL")}
    elif settings.slack == "webhook":
        secrets = {"webhook_url": dg.EnvVar("SLACK_WEBHOOK_URL")}
    return AlertsResource(ui_url=settings.ui_url, **secrets)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "alerts": alerts_resource(settings),
        "warehouse": DuckDBWarehouseResource(path=str(settings.duckdb_path)),
        "source": SimulatedLeagueResource(
            seed=settings.league_seed,
            outages=settings.league_outages,
            short=settings.league_short,
        ),
    }


def initialized(resources: dict[str, dg.ConfigurableResource]) -> dict:
    """Resources for use outside a run (CLI, demo): ``dg.EnvVar`` values resolved."""
    return {name: r.process_config_and_initialize() for name, r in resources.items()}


@dg.definitions
def resources() -> dg.Definitions:
    settings = Settings.from_env()
    return dg.Definitions(
        resources=build_resources(settings),
        # One process per run locally: DuckDB admits one writer process, and each step
        # process would re-import the code location.
        executor=dg.multiprocess_executor if settings.is_prod else dg.in_process_executor,
    )
