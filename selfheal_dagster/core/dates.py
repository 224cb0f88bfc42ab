"""Game dates are US/Eastern calendar dates; these helpers keep that rule in one place."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

EASTERN = ZoneInfo("America/New_York")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadDateError(ValueError):
    pass


def parse_date(text: str, what: str = "date") -> date:
    """Parse a strict ``YYYY-MM-DD`` date, or raise one line naming the bad value."""
    if not _ISO_DATE.match(text or ""):
        raise BadDateError(f"invalid {what} '{text}': expected YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadDateError(f"invalid {what} '{text}': not a calendar date (YYYY-MM-DD)") from None


def now_utc() -> datetime:
    return datetime.now(UTC)


def today_et(now: datetime | None = None) -> date:
    return (now or now_utc()).astimezone(EASTERN).date()


def eastern(day: date, hour: int, minute: int = 0) -> datetime:
    """An aware datetime at a wall-clock time in US/Eastern on ``day``."""
    return datetime.combine(day, time(hour, minute), tzinfo=EASTERN)


def date_range(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def day_spans(days: Iterable[date]) -> list[tuple[date, date]]:
    """Runs of consecutive dates, oldest first."""
    out: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if out and (day - out[-1][1]).days == 1:
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out


def span_text(days: Iterable[date]) -> str:
    """``2026-11-22..2026-12-02, 11 dates`` (or one date, or up to three spans)."""
    days = sorted(set(days))
    parts = [f"{a}" if a == b else f"{a}..{b}" for a, b in day_spans(days)]
    text = ", ".join(parts[:3]) + (f" and {len(parts) - 3} more spans" if len(parts) > 3 else "")
    return text if len(days) == 1 else f"{text}, {len(days)} dates"


def first_last(days: Iterable[date]) -> str:
    """``2025-12-15..2026-01-09``: the first and last of some dates (gaps not shown)."""
    days = sorted(set(days))
    return str(days[0]) if days[0] == days[-1] else f"{days[0]}..{days[-1]}"


def partition_tags(days: Sequence[date]) -> dict[str, str]:
    """The Dagster run tags that say which partitions a run computes: one key, or a range
    (assets with a single-run backfill policy compute the range in one run)."""
    first, last = min(days), max(days)
    if first == last:
        return {"dagster/partition": first.isoformat()}
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
