"""Game dates are US/Eastern calendar dates; these helpers keep that rule in one place."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from selfheal_dagster.core.text import listed

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
    text = listed(parts, 3, ", ", then=" ", noun="spans")
    return text if len(days) == 1 else f"{text}, {len(days)} dates"


def range_text(days: Sequence[date]) -> str:
    """How a run or a write names its dates: one date, or ``first..last (n dates)``."""
    days = sorted(days)
    return str(days[0]) if len(days) == 1 else f"{days[0]}..{days[-1]} ({len(days)} dates)"


def first_last(days: Iterable[date]) -> str:
    """``2025-12-15..2026-01-09``: the first and last of some dates (gaps not shown)."""
    days = sorted(set(days))
    return str(days[0]) if days[0] == days[-1] else f"{days[0]}..{days[-1]}"


PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_tags(days: Sequence[date]) -> dict[str, str]:
    """The Dagster run tags that say which partitions a run computes: one key, or a range
    (assets with a single-run backfill policy compute the range in one run)."""
    first, last = min(days), max(days)
    if first == last:
        return {PARTITION_TAG: first.isoformat()}
    return {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}


def tag_days(tags: Mapping[str, str]) -> list[date]:
    """The dates a run computes, from its tags (``partition_tags`` read back); none for an
    unpartitioned run."""
    if PARTITION_TAG in tags:
        return [date.fromisoformat(tags[PARTITION_TAG])]
    if RANGE_START_TAG in tags:
        start = date.fromisoformat(tags[RANGE_START_TAG])
        return date_range(start, date.fromisoformat(tags[RANGE_END_TAG]))
    return []


def tag_span(tags: Mapping[str, str]) -> str:
    """The date, or ``first..last`` dates, a run's tags say it computes."""
    if PARTITION_TAG in tags:
        return tags[PARTITION_TAG]
    return f"{tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}"
