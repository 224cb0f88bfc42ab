"""The ONE place that maps the environment (``SELFHEAL_ENV``) to resources and executor.

Local (the default) is the embedded DuckDB warehouse fed by the simulated league; nothing here
connects to anything at import or load time: resources open connections when an asset runs.
The warehouse resources open their engines through ``adapters/connect.py``, as the ``selfheal``
commands that only read the warehouse do without Dagster (runs get their BigQuery client from
dagster-gcp).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import dagster as dg
from pydantic import Field

from selfheal_dagster.adapters import alerts, connect
from selfheal_dagster.adapters.league import League, SourceOutage
from selfheal_dagster.adapters.settings import (
    DEFAULT_JOB_TIMEOUT_SECONDS,
    DEFAULT_MAX_BYTES_BILLED,
    Settings,
)
from selfheal_dagster.adapters.warehouse import Warehouse, WriteResult
from selfheal_dagster.core.errors import error_line
from selfheal_dagster.core.job_context import CLI, JobContext
from selfheal_dagster.tables import Table


class WarehouseResource(dg.ConfigurableResource):
    """Where the tables live. Subclasses open one engine behind the same interface; ``job``
    says whom its jobs serve (BigQuery labels them with it). Close what ``open`` returns (it
    is a context manager)."""

    def open(self, job: JobContext = CLI) -> Warehouse:
        raise NotImplementedError


class DuckDBWarehouseResource(WarehouseResource):
    path: str = Field(description="Path of the DuckDB file that holds the local warehouse.")
    lock_timeout_seconds: float = Field(
        default=connect.DUCKDB_LOCK_TIMEOUT_SECONDS,
        description="How long to wait for another process holding the DuckDB file lock.",
    )

    def open(self, job: JobContext = CLI) -> Warehouse:
        return connect.duckdb_warehouse(self.path, self.lock_timeout_seconds)


class BigQueryWarehouseResource(WarehouseResource):
    """Production: BigQuery through dagster-gcp's ``BigQueryResource`` (credentials the usual
    Google way: workload identity, GOOGLE_APPLICATION_CREDENTIALS, gcloud)."""

    project: str = Field(description="Google Cloud project holding the datasets.")
    location: str = Field(default="US", description="BigQuery location, e.g. US or EU.")
    max_bytes_billed: int = Field(
        default=DEFAULT_MAX_BYTES_BILLED,
        description="Byte cap on every query job (SELFHEAL_BQ_MAX_BYTES_BILLED).",
    )
    job_timeout_seconds: int = Field(
        default=DEFAULT_JOB_TIMEOUT_SECONDS,
        description="Every job is cancelled after this long (SELFHEAL_BQ_JOB_TIMEOUT_SECONDS).",
    )

    def open(self, job: JobContext = CLI) -> Warehouse:
        # import cost: dagster-gcp pulls in the BigQuery client, never imported locally
        from dagster_gcp import BigQueryResource

        bigquery = BigQueryResource(project=self.project, location=self.location or None)
        return connect.bigquery_warehouse(
            self.project,
            self.location,
            job=job,
            max_bytes_billed=self.max_bytes_billed,
            timeout_seconds=self.job_timeout_seconds,
            client=bigquery.get_client,
        )


class ServiceConfig(dg.Config):
    """A platform service over HTTP (bounded retries, timeouts, optional Google ID token)."""

    base_url: str = Field(description="Base URL of the service.")
    id_token: bool = Field(default=True, description="Send a Google ID token for the base URL.")
    timeout_seconds: float = Field(default=300.0, description="Timeout of one call.")
    attempts: int = Field(default=3, description="Attempts on 5xx, 429 or connection errors.")

    def client(self, name: str):
        # import cost: google-auth, only in production
        from selfheal_dagster.adapters.services import ServiceClient, google_id_token

        return ServiceClient(
            name=name,
            base_url=self.base_url,
            timeout_seconds=self.timeout_seconds,
            attempts=self.attempts,
            id_token=google_id_token if self.id_token else None,
        )


def verified(table: Table, day: date, warehouse: Warehouse) -> WriteResult:
    """What a service wrote, read back from the warehouse (the service's word is not enough):
    rows counted and ``MAX(_loaded_at)`` read in the table itself; no rows, no load time."""
    found = warehouse.partition_stats(table, day, day).get(day)
    return WriteResult(
        rows=found.rows if found else 0, loaded_at=found.loaded_at if found else None
    )


@dataclass(frozen=True)
class RangeLoad:
    """A range load: what was written (per date), and the dates the source could not give."""

    written: WriteResult | None
    failed: dict[date, str]


class Phase1SourceResource(dg.ConfigurableResource):
    """The Phase 1 source: loads one Phase 2 table for one date into the warehouse."""

    def load(
        self, table: Table, day: date, warehouse: Warehouse, job: JobContext = CLI
    ) -> WriteResult:
        raise NotImplementedError

    def load_range(
        self, table: Table, days: Sequence[date], warehouse: Warehouse, job: JobContext = CLI
    ) -> RangeLoad:
        """Every date of ``days``; the default loads them one at a time (a source that writes
        the warehouse itself cannot do better). A date the source fails on is reported, not
        raised, so the other dates still load."""
        by_day: dict[date, int] = {}
        failed: dict[date, str] = {}
        last = None
        for day in days:
            try:
                last = self.load(table, day, warehouse, job)
                by_day[day] = last.rows
            except Exception as exc:  # one date's failure is that date's, reported by the caller
                failed[day] = error_line(exc)
        if last is None:
            return RangeLoad(None, failed)
        written = WriteResult(sum(by_day.values()), last.loaded_at, by_day)
        return RangeLoad(written, failed)

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

    slow: str = Field(
        default="",
        description="Comma list of table@YYYY-MM-DD:SECONDS the source takes to deliver.",
    )

    def league(self) -> League:
        return connect.league(self.seed, self.outages, self.short, self.slow)

    def scheduled_games(self, day: date) -> int | None:
        return connect.scheduled_games(self.seed, day)

    def load(
        self, table: Table, day: date, warehouse: Warehouse, job: JobContext = CLI
    ) -> WriteResult:
        rows = self.league().feed(table.feed or table.name, day)
        return warehouse.replace_partition(table, day, rows)

    def load_range(
        self, table: Table, days: Sequence[date], warehouse: Warehouse, job: JobContext = CLI
    ) -> RangeLoad:
        """Fetch every date, then write the dates fetched in ONE atomic range write."""
        league = self.league()
        rows: dict[date, list[dict]] = {}
        failed: dict[date, str] = {}
        for day in days:
            try:
                rows[day] = league.feed(table.feed or table.name, day)
            except SourceOutage as exc:
                failed[day] = error_line(exc)
        written = warehouse.replace_partitions(table, rows) if rows else None
        return RangeLoad(written, failed)


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
    mode: str = Field(
        default="all",
        description="all: every incident; pages: only what needs a person, and a daily digest.",
    )
    max_attempts: int = Field(default=3, description="Heal attempts per target (for the text).")
    attempts: int = Field(default=3, description="Delivery attempts per alert.")
    timeout_seconds: float = Field(default=3.0, description="Timeout of each attempt.")
    max_retry_after_seconds: float = Field(
        default=5.0, description="Longest Retry-After (HTTP 429) honoured before giving up."
    )

    def sink(self, echo=None):
        """The configured destination; ``echo`` also receives log-sink alerts (sensor logs)."""
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
        link = (lambda run_id: f"{self.ui_url}/runs/{run_id}") if self.ui_url else None
        return alerts.Notifier(
            self.sink(echo), warehouse, link, mode=self.mode, max_attempts=self.max_attempts
        )


def alerts_resource(settings: Settings) -> AlertsResource:
    secrets: dict[str, object] = {}
    if settings.slack == "bot":
        secrets = {"bot_token": dg.EnvVar("SLACK_BOT_TOKEN"), "channel": dg.EnvVar("SLACK_CHANNEL")}
        if settings.slack_api_url:
            secrets["slack_api_url"] = settings.slack_api_url.rstrip("/") + "/"
    elif settings.slack == "webhook":
        secrets = {"webhook_url": dg.EnvVar("SLACK_WEBHOOK_URL")}
    return AlertsResource(
        ui_url=settings.ui_url,
        mode=settings.alerts,
        max_attempts=settings.heal_max_attempts,
        **secrets,
    )


class ScraperServiceResource(Phase1SourceResource):
    """Production Phase 1: ``POST {PHASE1_SCRAPER_URL}/{scraper}?game_date=D`` runs the one
    scraper and loader for that table and date; the rows are then read back."""

    service: ServiceConfig = Field(description="The scraper service.")

    def load(
        self, table: Table, day: date, warehouse: Warehouse, job: JobContext = CLI
    ) -> WriteResult:
        client = self.service.client("scraper service")
        client.post(table.feed or table.name, {"game_date": str(day)}, job)
        return verified(table, day, warehouse)


class Phase4Resource(dg.ConfigurableResource):
    """Runs a Phase 4 processor: its SQL inside the warehouse, or (per processor) the
    platform's Phase 4 service followed by a read-back of the partition."""

    service: ServiceConfig | None = Field(
        default=None, description="The Phase 4 service, for the processors routed to it."
    )
    via_service: list[str] = Field(
        default_factory=list, description="Phase 4 tables computed by the service."
    )

    def run(
        self, table: Table, days: Sequence[date], warehouse: Warehouse, job: JobContext = CLI
    ) -> tuple[WriteResult, str]:
        """Compute ``days`` (one date or a range): in-warehouse SQL as one statement; the
        service, which takes one date per call, one call per date."""
        if self.service is not None and table.name in self.via_service:
            client = self.service.client("Phase 4 service")
            by_day, last = {}, None
            for day in days:
                client.post(table.name, {table.partition_column: str(day)}, job)
                last = verified(table, day, warehouse)
                by_day[day] = last.rows
            assert last is not None
            return WriteResult(sum(by_day.values()), last.loaded_at, by_day), "phase4 service"
        return warehouse.run_processor(table, days), f"{warehouse.kind} SQL"


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    if settings.is_prod:
        id_token = settings.service_auth == "id_token"
        phase4_service = (
            ServiceConfig(base_url=dg.EnvVar("PHASE4_SERVICE_URL"), id_token=id_token)
            if settings.phase4_via_service
            else None
        )
        return {
            "alerts": alerts_resource(settings),
            "warehouse": BigQueryWarehouseResource(
                project=dg.EnvVar("SELFHEAL_BQ_PROJECT"),
                location=settings.bq_location,
                max_bytes_billed=settings.bq_max_bytes_billed,
                job_timeout_seconds=settings.bq_job_timeout_seconds,
            ),
            "source": ScraperServiceResource(
                service=ServiceConfig(base_url=dg.EnvVar("PHASE1_SCRAPER_URL"), id_token=id_token)
            ),
            "phase4": Phase4Resource(
                service=phase4_service, via_service=list(settings.phase4_via_service)
            ),
        }
    return {
        "alerts": alerts_resource(settings),
        "warehouse": DuckDBWarehouseResource(path=str(settings.duckdb_path)),
        "source": SimulatedLeagueResource(
            seed=settings.league_seed,
            outages=settings.league_outages,
            short=settings.league_short,
            slow=settings.league_slow,
        ),
        "phase4": Phase4Resource(),
    }


def initialized(resources: dict[str, dg.ConfigurableResource]) -> dict:
    """Resources for use outside a run (CLI, demo): ``dg.EnvVar`` values resolved.

    All of them in one ``dg.build_resources``, so under one ephemeral instance: initialised
    one at a time, each made its own, and a quick command took 0.1 CPU-s more (1.75, 1.65 now).
    Through the context-manager form, closed at once: an init context left open holds an
    entered ephemeral instance, and when the garbage collector later finalises it, Dagster's
    context-local defs-state storage is reset to whatever instance was current when it was
    made, possibly one closed since (the "undefined DagsterInstance weakref" seen when
    definitions are resolved afterwards). None of these resources holds anything that its
    teardown would release.
    """
    with dg.build_resources(resources) as built:
        return {name: getattr(built, name) for name in resources}


# Production runs each step in a process of its own (a step that hangs or dies takes only
# itself), forked from a server that imported Dagster and the location once per run. Spawned,
# each of a heal's steps (a table's and its checks': 10 for five tables) was a fresh
# interpreter importing both again, seconds of CPU apiece before any work.
PROD_EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["selfheal_dagster.definitions"]}}}
)


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    return dg.Definitions(
        resources=build_resources(settings),
        # One process per run locally: DuckDB admits one writer process, and each step
        # process would re-import the code location.
        executor=PROD_EXECUTOR if settings.is_prod else dg.in_process_executor,
    )
