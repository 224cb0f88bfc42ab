"""``selfheal doctor``: what an engineer runs first on a real project (``dbt debug`` for this).

One pass, one line per item, ✓ or ✗ with the fix: in production the settings, the Google
credentials, every dataset and table against the registry (partition column, clustering,
column types and modes, ``require_partition_filter``), every statement the product sends as
a BigQuery dry run (free: it checks the SQL, the names and the permissions, and says the
bytes it would read), the Phase 1 and Phase 4 services (an ID token minted, the service
answering), and Slack; then the bytes a one-date heal would read. Locally: the settings, the
DuckDB file and its tables, and Slack. An item that needs one that failed is skipped (·), so
one fault is one ✗ line.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from selfheal_dagster import report
from selfheal_dagster.adapters.services import google_id_token
from selfheal_dagster.adapters.settings import Settings
from selfheal_dagster.adapters.warehouse import WarehouseError
from selfheal_dagster.core import history
from selfheal_dagster.core.dates import today_et
from selfheal_dagster.core.errors import error_line
from selfheal_dagster.core.job_context import JobContext
from selfheal_dagster.core.text import more
from selfheal_dagster.tables import TABLES

ROLES = {
    "jobs": "roles/bigquery.jobUser on the project",
    "data": "roles/bigquery.dataEditor on the dataset",
    "create": "roles/bigquery.user on the project (it creates datasets)",
    "invoke": "roles/run.invoker on the service",
}


@dataclass(frozen=True)
class Line:
    ok: bool | None  # None: skipped, because an item it needs failed
    item: str
    detail: str

    def render(self) -> str:
        mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[dim]·[/]"}[self.ok]
        return f"{mark} {self.item}: {self.detail}"


def run(settings: Settings, day: date | None = None) -> Iterator[Line]:
    """Every item, in order, as it is checked."""
    day = day or today_et() - timedelta(days=1)
    if settings.is_prod:
        yield from _production(settings, day)
    else:
        yield from _local(settings)
    yield from _slack(settings)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# --- local ------------------------------------------------------------------------------------


def _local(settings: Settings) -> Iterator[Line]:
    import duckdb

    path = Path(settings.duckdb_path)
    yield Line(True, "settings", f"SELFHEAL_ENV=local, warehouse {path}")
    if not path.exists():
        yield Line(False, "warehouse", f"no DuckDB file at {path}: run selfheal init")
        return
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        yield Line(False, "warehouse", f"cannot open {path}: {error_line(exc)}")
        return
    try:
        found = {
            f"{schema}/{name}"
            for schema, name in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
            ).fetchall()
        }
    finally:
        con.close()
    wanted = [t.key for t in TABLES] + [f"{history.DATASET}/{history.TABLE}"]
    missing = [key for key in wanted if key not in found]
    if missing:
        yield Line(False, "tables", f"{', '.join(missing)} missing: run selfheal init")
    else:
        yield Line(True, "tables", f"all {len(wanted)} in {path.name}")


# --- production -------------------------------------------------------------------------------


def _production(settings: Settings, day: date) -> Iterator[Line]:
    cap = _size(settings.bq_max_bytes_billed)
    yield Line(
        True,
        "settings",
        f"project {report.resources()['warehouse'].project}, location {settings.bq_location}, "
        f"{cap} cap per query, {settings.bq_job_timeout_seconds}s timeout per job",
    )
    identity = yield from _credentials()
    if identity is None:
        yield Line(None, "BigQuery", "skipped: no credentials")
        yield from _services(settings, identity)
        return
    resource = report.resources()["warehouse"]
    with resource.open(JobContext("doctor")) as wh:
        broken = yield from _datasets(wh, settings.bq_location, identity)
        broken |= yield from _tables(wh, broken, identity)
        yield from _statements(wh, day, broken, settings.bq_max_bytes_billed)
    yield from _services(settings, identity)


def _credentials() -> Iterator[Line]:
    """The Google credentials the clients will use, refreshed once (a token is minted)."""
    import google.auth
    import google.auth.transport.requests

    try:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
        credentials.refresh(google.auth.transport.requests.Request())
    except Exception as exc:  # noqa: BLE001 - any failure is this line's answer
        yield Line(
            False,
            "credentials",
            f"{error_line(exc)}: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key, "
            "or run gcloud auth application-default login --impersonate-service-account=SA",
        )
        return None
    who = getattr(credentials, "service_account_email", None) or "user credentials (gcloud)"
    yield Line(True, "credentials", f"{who}, token minted")
    return who


def _datasets(wh, location: str, identity: str) -> Iterator[Line]:
    from google.api_core.exceptions import Forbidden

    broken: set[str] = set()
    for dataset in sorted({t.dataset for t in TABLES} | {history.DATASET}):
        try:
            found = wh.dataset_location(dataset)
        except Forbidden:
            broken.add(dataset)
            yield Line(False, f"dataset {dataset}", f"403: grant {identity} {ROLES['data']}")
            continue
        except Exception as exc:  # noqa: BLE001
            broken.add(dataset)
            yield Line(False, f"dataset {dataset}", error_line(exc))
            continue
        if found is None:
            broken.add(dataset)
            yield Line(
                False, f"dataset {dataset}", f"missing: run selfheal init ({ROLES['create']})"
            )
        elif found != location:
            broken.add(dataset)
            yield Line(
                False,
                f"dataset {dataset}",
                f"in {found}, not {location}: set SELFHEAL_BQ_LOCATION={found}",
            )
        else:
            yield Line(True, f"dataset {dataset}", f"in {found}")
    return broken


def _tables(wh, broken_datasets: set[str], identity: str) -> Iterator[Line]:
    from google.api_core.exceptions import Forbidden

    # import cost: the BigQuery client, only in production
    from selfheal_dagster.adapters.warehouse.bigquery import history_problems, shape_problems

    broken: set[str] = set()
    checks = [(t.key, t.dataset, t.name, t) for t in TABLES]
    checks.append((f"{history.DATASET}/{history.TABLE}", history.DATASET, history.TABLE, None))
    for key, dataset, name, table in checks:
        item = f"table {dataset}.{name}"
        if dataset in broken_datasets:
            broken.add(key)
            yield Line(None, item, f"skipped: dataset {dataset} failed")
            continue
        try:
            shape = wh.table_shape(f"{dataset}.{name}")
        except Forbidden:
            broken.add(key)
            yield Line(False, item, f"403: grant {identity} {ROLES['data']} ({dataset})")
            continue
        if shape is None:
            broken.add(key)
            yield Line(False, item, "missing: run selfheal init")
            continue
        problems = shape_problems(table, shape) if table else history_problems(shape)
        if problems:
            broken.add(key)
            rest = f" ({more(len(problems) - 1)})" if len(problems) > 1 else ""
            yield Line(False, item, problems[0] + rest)
        else:
            yield Line(True, item, "as the registry declares it")
    return broken


def _statements(wh, day: date, broken: set[str], cap: int) -> Iterator[Line]:
    """Every statement as a free dry run; then what a one-date heal would read."""
    heal_bytes, heal_ok = 0, True
    for statement in wh.all_statements(day):
        item = f"dry run {statement.name}"
        needs = [t for t in statement.tables if t in broken]
        if needs:
            heal_ok = heal_ok and not statement.heal
            yield Line(None, item, f"skipped: {needs[0]} failed")
            continue
        try:
            found = wh.dry_run(statement.sql, statement.params)
        except WarehouseError as exc:
            heal_ok = heal_ok and not statement.heal
            yield Line(False, item, str(exc))
            continue
        if statement.heal:
            heal_bytes += found
        yield Line(True, item, f"would read {_size(found)}")
    if heal_ok:
        yield Line(
            True,
            "one-date heal",
            f"would read about {_size(heal_bytes)} for {day} (each query capped at {_size(cap)})",
        )
    else:
        yield Line(None, "one-date heal", "skipped: a statement it sends failed")


def _services(settings: Settings, identity: str | None) -> Iterator[Line]:
    import os

    urls = {"Phase 1 scraper service": os.environ.get("PHASE1_SCRAPER_URL", "")}
    if settings.phase4_via_service:
        urls["Phase 4 service"] = os.environ.get("PHASE4_SERVICE_URL", "")
    for name, url in urls.items():
        yield _service(name, url, settings.service_auth == "id_token", identity)


def _service(name: str, url: str, id_token: bool, identity: str | None) -> Line:
    import requests

    headers = {}
    if id_token:
        try:
            headers["Authorization"] = f"Bearer {google_id_token(url)}"
        except Exception as exc:  # noqa: BLE001 - any failure is this line's answer
            return Line(
                False,
                name,
                f"cannot mint an ID token for {url} ({error_line(exc)}): use a service-account "
                "key, impersonation (gcloud auth application-default login "
                "--impersonate-service-account=SA), or run on GKE or Cloud Run",
            )
    try:
        answer = requests.get(url, headers=headers, timeout=10)
    except requests.RequestException as exc:
        return Line(False, name, f"unreachable at {url} ({type(exc).__name__}): check the URL")
    if answer.status_code in (401, 403):
        who = identity or "the service account"
        return Line(
            False,
            name,
            f"refused our ID token (HTTP {answer.status_code}): grant {who} {ROLES['invoke']}",
        )
    if answer.status_code >= 500:
        return Line(False, name, f"answers HTTP {answer.status_code} at {url}")
    token = ", ID token accepted" if id_token else ""
    return Line(True, name, f"reachable at {url} (HTTP {answer.status_code}{token})")


def _slack(settings: Settings) -> Iterator[Line]:
    import os

    if settings.slack == "log":
        yield Line(True, "alerts", "to the log: no Slack configured (SLACK_BOT_TOKEN or webhook)")
        return
    if settings.slack == "webhook":
        url = urlsplit(os.environ["SLACK_WEBHOOK_URL"])
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=5).close()
        except OSError as exc:
            yield Line(False, "Slack webhook", f"{url.hostname}:{port} unreachable ({exc})")
            return
        yield Line(True, "Slack webhook", f"{url.hostname} reachable (nothing posted)")
        return
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    base = (settings.slack_api_url or "https://slack.com/api").rstrip("/") + "/"
    client = WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=base, timeout=10)
    try:
        found = client.auth_test()
    except SlackApiError as exc:
        said = exc.response.get("error", "error")
        yield Line(False, "Slack bot", f"auth.test says {said}: check SLACK_BOT_TOKEN")
        return
    except Exception as exc:  # noqa: BLE001 - unreachable, refused: this line's answer
        yield Line(False, "Slack bot", f"auth.test failed: {error_line(exc)}")
        return
    yield Line(
        True,
        "Slack bot",
        f"signed in as {found.get('user')} on {found.get('team')}, posting to "
        f"{os.environ['SLACK_CHANNEL']}",
    )
