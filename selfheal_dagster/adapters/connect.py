"""The warehouse and the Phase 1 calendar the settings name, as plain objects, without Dagster.

For the ``selfheal`` commands that only read or damage the warehouse (``check``, ``status``,
``history``, ``gap``, ``init``): importing Dagster to build its resources was about two
thirds of such a command's CPU (1.1 CPU-s, now 0.2). Runs and sensors get the same engines
through the Dagster resources of ``defs/resources.py``, which open them with the functions
here (the BigQuery one with its client from dagster-gcp's ``BigQueryResource``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from datetime import date
from functools import cache

from selfheal_dagster.adapters.league import League, parse_outages, parse_short, parse_slow
from selfheal_dagster.adapters.settings import Settings
from selfheal_dagster.adapters.warehouse import Warehouse
from selfheal_dagster.core.checks import Calendar
from selfheal_dagster.core.job_context import CLI, JobContext

DUCKDB_LOCK_TIMEOUT_SECONDS = 120.0


def duckdb_warehouse(path: str, lock_timeout: float = DUCKDB_LOCK_TIMEOUT_SECONDS) -> Warehouse:
    # import cost: the engine's module (and duckdb) only where it is used
    from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse

    return DuckDBWarehouse(path, lock_timeout=lock_timeout)


def bigquery_warehouse(
    project: str,
    location: str,
    *,
    job: JobContext,
    max_bytes_billed: int,
    timeout_seconds: int,
    client: Callable[[], AbstractContextManager] | None = None,
) -> Warehouse:
    """BigQuery for ``project``. ``client``: where the client comes from (runs: dagster-gcp's
    ``BigQueryResource.get_client``); by default the one that makes without a
    ``gcp_credentials`` key: the project and location, credentials the usual Google way."""
    # import cost: the BigQuery client (and its engine module), only in production
    from google.cloud import bigquery

    from selfheal_dagster.adapters.warehouse.bigquery import BigQueryWarehouse  # import cost

    where = location or None
    return BigQueryWarehouse(
        project,
        where,
        client=client or (lambda: nullcontext(bigquery.Client(project=project, location=where))),
        job=job,
        max_bytes_billed=max_bytes_billed,
        timeout_seconds=timeout_seconds,
    )


def open_warehouse(
    settings: Settings, job: JobContext = CLI, environ: Mapping[str, str] = os.environ
) -> Warehouse:
    """The settings' warehouse: the DuckDB file, or in production BigQuery."""
    if not settings.is_prod:
        return duckdb_warehouse(str(settings.duckdb_path))
    return bigquery_warehouse(
        environ["SELFHEAL_BQ_PROJECT"],  # as dg.EnvVar gives it to runs; Settings checked it
        settings.bq_location,
        job=job,
        max_bytes_billed=settings.bq_max_bytes_billed,
        timeout_seconds=settings.bq_job_timeout_seconds,
    )


@cache
def league(seed: int, outages: str, short: str, slow: str) -> League:
    """One League per configuration and process: checks ask the calendar thousands of times."""
    return League(
        seed, outages=parse_outages(outages), short=parse_short(short), slow=parse_slow(slow)
    )


@cache
def scheduled_games(seed: int, day: date) -> int:
    """Games the simulated league's calendar has on ``day`` (faults do not move games)."""
    return len(league(seed, "", "", "").games_on(day))  # the resource's key when fault-free


def calendar(settings: Settings) -> Calendar | None:
    """What the checks ask the Phase 1 source: the simulated league's calendar locally; in
    production the scraper service has none (the schedule table vouches for the games)."""
    if settings.is_prod:
        return None
    seed = settings.league_seed
    return lambda day: scheduled_games(seed, day)
