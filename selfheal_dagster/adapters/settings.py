"""Every environment variable the project reads, parsed and validated in one place.

Errors are one line naming the variable and what a right value looks like, so the CLI and the
code location can show them as they are.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from selfheal_dagster.adapters.league import parse_outages, parse_short, parse_slow
from selfheal_dagster.core.calendar import opening_night
from selfheal_dagster.core.dates import BadDateError
from selfheal_dagster.tables import in_phase

DEFAULT_SEED = 20251021
DEFAULT_SEASON = 2024  # the 2024-25 season
ENVIRONMENTS = ("local", "prod")
# Every BigQuery query is capped: a one-date heal reads megabytes and a season's backfill a few
# hundred; 10 GiB (about $0.06 on demand) stops a runaway query long before it costs money.
DEFAULT_MAX_BYTES_BILLED = 10 * 1024**3
MIN_BYTES_BILLED = 10 * 1024**2  # BigQuery bills at least 10 MB per table a query reads
# A BigQuery job that runs longer is cancelled (by BigQuery, and by the step waiting on it).
DEFAULT_JOB_TIMEOUT_SECONDS = 900
ALERT_MODES = ("all", "pages")


class SettingsError(ValueError):
    pass


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}='{raw}' is not a whole number") from None


def _season(environ: Mapping[str, str]) -> int:
    """``SELFHEAL_SEASON``: the year the first partitioned season starts in (2024 = 2024-25)."""
    season = _int(environ, "SELFHEAL_SEASON", DEFAULT_SEASON)
    if not 2000 <= season <= 2100:
        raise SettingsError(f"SELFHEAL_SEASON={season} is out of range: expected e.g. 2024")
    return season


def season_start(settings: Settings | None = None) -> date:
    """First partition: opening night of the configured season (the settings read once)."""
    return opening_night((settings or Settings.from_env()).season)


@dataclass(frozen=True)
class Settings:
    env: str
    duckdb_path: Path
    league_seed: int
    league_outages: str
    league_short: str
    league_slow: str
    season: int
    sweep_interval_seconds: int
    sweep_reassert_minutes: int
    sweep_phase2_days: int
    sweep_phase4_days: int
    heal_interval_seconds: int
    heal_max_attempts: int
    heal_backoff_seconds: int
    slack: str  # "bot" | "webhook" | "log": which alert destination is configured
    ui_url: str
    alerts: str = "all"  # "all": every incident; "pages": what needs a person, and a digest
    slack_api_url: str = ""  # Slack's Web API base URL, when not Slack's own (a proxy, tests)
    heal_group_wait_seconds: int = 60
    bq_location: str = ""
    bq_max_bytes_billed: int = DEFAULT_MAX_BYTES_BILLED
    bq_job_timeout_seconds: int = DEFAULT_JOB_TIMEOUT_SECONDS
    phase4_via_service: tuple[str, ...] = ()  # Phase 4 tables computed by the Phase 4 service
    service_auth: str = "id_token"  # "id_token" | "none"

    @property
    def is_prod(self) -> bool:
        return self.env == "prod"

    @property
    def warehouse_kind(self) -> str:
        return "bigquery" if self.is_prod else "duckdb"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Every setting, validated; one clear line (``SettingsError``) for a bad one. Read
        once per distinct environment: a code-location load asks from several modules."""
        return _settings(tuple(sorted(environ.items())))


@cache
def _settings(items: tuple[tuple[str, str], ...]) -> Settings:
    environ = dict(items)
    env = environ.get("SELFHEAL_ENV", "local").strip().lower() or "local"
    if env not in ENVIRONMENTS:
        raise SettingsError(f"SELFHEAL_ENV='{env}' is not valid: expected local or prod")
    league = _league(environ)
    intervals = _intervals(environ)
    slack = _slack(environ)
    attempts = _int(environ, "SELFHEAL_HEAL_MAX_ATTEMPTS", 3)
    if attempts < 1:
        raise SettingsError(f"SELFHEAL_HEAL_MAX_ATTEMPTS={attempts}: expected >= 1")
    raw_path = environ.get("SELFHEAL_DUCKDB_PATH", "").strip() or ".selfheal/warehouse.duckdb"
    prod = _prod(environ) if env == "prod" else {}
    duckdb_path = Path(raw_path).expanduser().resolve()
    if env == "local":
        _writable(duckdb_path, "SELFHEAL_DUCKDB_PATH")
    return Settings(
        **prod,
        **league,
        **intervals,
        **slack,
        **_windows(environ),
        env=env,
        duckdb_path=duckdb_path,
        season=_season(environ),
        heal_max_attempts=attempts,
    )


def _league(environ: Mapping[str, str]) -> dict[str, object]:
    """The simulated league's seed and its scripted faults, each parsed to check it."""
    found = {
        "league_outages": environ.get("SELFHEAL_LEAGUE_OUTAGES", ""),
        "league_short": environ.get("SELFHEAL_LEAGUE_SHORT", ""),
        "league_slow": environ.get("SELFHEAL_LEAGUE_SLOW", ""),
    }
    for (field_name, value), parse in zip(
        found.items(), (parse_outages, parse_short, parse_slow), strict=True
    ):
        try:
            parse(value)
        except (ValueError, BadDateError) as exc:
            name = "SELFHEAL_" + field_name.upper()
            raise SettingsError(f"{name}: {exc}") from None
    return {**found, "league_seed": _int(environ, "SELFHEAL_LEAGUE_SEED", DEFAULT_SEED)}


def _intervals(environ: Mapping[str, str]) -> dict[str, int]:
    """How often the sweep and the heal sensor tick."""
    found = {
        "sweep_interval_seconds": _int(environ, "SELFHEAL_SWEEP_INTERVAL_SECONDS", 300),
        "heal_interval_seconds": _int(environ, "SELFHEAL_HEAL_INTERVAL_SECONDS", 30),
    }
    for field_name, value in found.items():
        if value < 5:
            name = "SELFHEAL_" + field_name.upper()
            raise SettingsError(f"{name}={value}: expected >= 5 (seconds)")
    return found


def _slack(environ: Mapping[str, str]) -> dict[str, str]:
    """Where alerts go (a bot needs a token and a channel), the UI's links, the alert mode."""
    bot, channel = environ.get("SLACK_BOT_TOKEN", ""), environ.get("SLACK_CHANNEL", "")
    if bool(bot) != bool(channel):
        missing = "SLACK_CHANNEL" if bot else "SLACK_BOT_TOKEN"
        raise SettingsError(f"{missing} is not set: a Slack bot needs both a token and a channel")
    webhook = _url(environ, "SLACK_WEBHOOK_URL", required=False)
    ui_url = _url(environ, "SELFHEAL_UI_URL", required=False)
    slack_api_url = _url(environ, "SELFHEAL_SLACK_API_URL", required=False)
    alerts = environ.get("SELFHEAL_ALERTS", "all").strip().lower() or "all"
    if alerts not in ALERT_MODES:
        raise SettingsError(f"SELFHEAL_ALERTS='{alerts}' is not valid: expected all or pages")
    return {
        "slack": "bot" if bot else ("webhook" if webhook else "log"),
        "ui_url": ui_url.rstrip("/"),
        "slack_api_url": slack_api_url,
        "alerts": alerts,
    }


def _windows(environ: Mapping[str, str]) -> dict[str, int]:
    """The sweep's windows and the heal loop's waits (non-negative)."""
    found = {
        field_name: _int(environ, "SELFHEAL_" + field_name.upper(), default)
        for field_name, default in (
            ("sweep_reassert_minutes", 30),
            ("sweep_phase2_days", 3),
            ("sweep_phase4_days", 1),
            ("heal_backoff_seconds", 300),
            ("heal_group_wait_seconds", 60),
        )
    }
    for field_name, value in found.items():
        if value < 0:
            raise SettingsError(f"SELFHEAL_{field_name.upper()}={value}: expected >= 0")
    return found


def _url(environ: Mapping[str, str], name: str, required: bool) -> str:
    value = environ.get(name, "").strip()
    if not value:
        if required:
            raise SettingsError(f"{name} is not set: required when SELFHEAL_ENV=prod")
        return ""
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or re.search(r"\s", value):
        raise SettingsError(f"{name} is not an http(s) URL with a host")
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise SettingsError(f"{name} has an invalid port") from None
    return value


def _writable(path: Path, name: str) -> None:
    """A file we will create or write: it, or the nearest directory that exists above it,
    must be writable. Checked before anything is created: a probe file is made there and
    removed at once (``os.access`` says yes to root even where nothing can be created)."""
    if path.exists():
        if path.is_dir():
            raise SettingsError(f"{name}={path} is a directory: expected a file path")
        if not os.access(path, os.R_OK | os.W_OK):
            raise SettingsError(f"{name}={path} is not writable")
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SettingsError(f"{name}={path}: cannot create it under {parent}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".selfheal-probe-", dir=parent)
    except OSError as exc:
        raise SettingsError(
            f"{name}={path}: cannot create it under {parent} ({exc.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _prod(environ: Mapping[str, str]) -> dict[str, object]:
    """What production needs, checked at load: one line naming the missing variable."""
    project = environ.get("SELFHEAL_BQ_PROJECT", "").strip()
    if not project:
        raise SettingsError("SELFHEAL_BQ_PROJECT is not set: required when SELFHEAL_ENV=prod")
    if not re.match(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", project):
        raise SettingsError(f"SELFHEAL_BQ_PROJECT='{project}' is not a Google Cloud project id")
    _url(environ, "PHASE1_SCRAPER_URL", required=True)
    phase4_url = _url(environ, "PHASE4_SERVICE_URL", required=False)
    names = [t.name for t in in_phase(4)]
    raw = environ.get("SELFHEAL_PHASE4_VIA_SERVICE", "all" if phase4_url else "").strip()
    via = names if raw == "all" else [n.strip() for n in raw.split(",") if n.strip()]
    unknown = sorted(set(via) - set(names))
    if unknown:
        raise SettingsError(
            f"SELFHEAL_PHASE4_VIA_SERVICE names unknown processors {', '.join(unknown)}: "
            f"expected 'all' or some of {', '.join(names)}"
        )
    if via and not phase4_url:
        raise SettingsError("PHASE4_SERVICE_URL is not set: SELFHEAL_PHASE4_VIA_SERVICE needs it")
    auth = environ.get("SELFHEAL_SERVICE_AUTH", "id_token").strip() or "id_token"
    if auth not in ("id_token", "none"):
        raise SettingsError(
            f"SELFHEAL_SERVICE_AUTH='{auth}' is not valid: expected id_token or none"
        )
    return {
        **_bigquery_limits(environ),
        # BigQuery's own default location, said out loud: datasets are created there and
        # every job runs there.
        "bq_location": environ.get("SELFHEAL_BQ_LOCATION", "").strip() or "US",
        "phase4_via_service": tuple(via),
        "service_auth": auth,
    }


def _bigquery_limits(environ: Mapping[str, str]) -> dict[str, int]:
    """The byte cap and the timeout every BigQuery job carries."""
    cap = _int(environ, "SELFHEAL_BQ_MAX_BYTES_BILLED", DEFAULT_MAX_BYTES_BILLED)
    if cap < MIN_BYTES_BILLED:
        raise SettingsError(
            f"SELFHEAL_BQ_MAX_BYTES_BILLED={cap} is below BigQuery's 10 MB minimum per table "
            f"read: expected >= {MIN_BYTES_BILLED} (default {DEFAULT_MAX_BYTES_BILLED})"
        )
    timeout = _int(environ, "SELFHEAL_BQ_JOB_TIMEOUT_SECONDS", DEFAULT_JOB_TIMEOUT_SECONDS)
    if timeout < 10:
        raise SettingsError(f"SELFHEAL_BQ_JOB_TIMEOUT_SECONDS={timeout}: expected >= 10 (seconds)")
    return {"bq_max_bytes_billed": cap, "bq_job_timeout_seconds": timeout}
