"""Row-count, freshness and key expectations: pure functions over a window of partition stats.

The same evaluation serves the checks that run in a materialising run, the sweep, ``selfheal
check`` and the coverage grid, so they can never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import cache
from statistics import median
from typing import Any

from selfheal_dagster.core.calendar import opening_night, season_of
from selfheal_dagster.core.coverage import Window
from selfheal_dagster.core.dates import eastern, first_last, span_text
from selfheal_dagster.core.text import listed
from selfheal_dagster.tables import BY_KEY, BY_NAME, SCHEDULE, TABLES, Table, in_phase

CHECKS = ("row_count", "freshness", "key")
# Result metadata: when the warehouse read behind it started (wall clock). A failure read
# before the partition's last write says nothing about what that write left.
READ_AT = "read_at"
HISTORY_DAYS = 30  # how far back the volume bound looks for earlier game days
WINDOW_BACK = max(HISTORY_DAYS, max(t.lookback_days for t in TABLES))

Calendar = Callable[[date], int | None]
"""Games the Phase 1 source says are scheduled on a date, or None when it cannot say."""


class Status(StrEnum):
    OK = "ok"
    NO_GAMES = "no_games"
    NOT_DUE = "not_due"
    LATE = "late"
    STALE = "stale"
    SHORT = "short"
    MISSING = "missing"
    SPIKE = "spike"  # more rows than the games can produce: a doubled load
    DUPLICATE = "duplicate"  # a key appears more than once
    NULL_KEY = "null_key"  # a key column is NULL


HEALABLE = frozenset(
    {Status.MISSING, Status.SHORT, Status.STALE, Status.SPIKE, Status.DUPLICATE, Status.NULL_KEY}
)
# Worst first: what a coverage cell shows when its checks disagree.
SEVERITY_ORDER = (
    Status.MISSING,
    Status.SHORT,
    Status.DUPLICATE,
    Status.SPIKE,
    Status.NULL_KEY,
    Status.STALE,
    Status.LATE,
    Status.NOT_DUE,
    Status.OK,
    Status.NO_GAMES,
)


@dataclass(frozen=True)
class CheckOutcome:
    table: Table
    check: str
    day: date
    status: Status
    reason: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Present but late passes (the delay is in the metadata): a backfilled week is green,
        and a reloaded past partition counts as fixed."""
        return self.status not in HEALABLE

    @property
    def heals(self) -> bool:
        return self.status in HEALABLE


# A table that reads a lookback has nothing to compute for a team that has not played yet:
# until the season's games in its lookback make one league round (every team once), it is
# not expected to have rows (the season's first days compute short or empty partitions).
LEAGUE_ROUND_GAMES = 15


def _scheduled(day: date, window: Window, calendar: Calendar | None) -> int:
    known = calendar(day) if calendar else None
    return known if known is not None else window.games(day)


def lookback_reach(table: Table) -> int:
    """The longest lookback ``table`` depends on, directly or through what it reads."""
    return max([table.lookback_days, *(_reach(u.table) for u in table.upstream)])


@cache  # the registry is fixed at import; a check reads this for every date of its window
def _reach(name: str) -> int:
    return lookback_reach(BY_NAME[name])


def season_filling(table: Table, day: date, window: Window, calendar: Calendar | None) -> bool:
    """True on the season's first days, while the lookback that ``table`` reads (itself or
    through a same-date upstream) holds less than a league round."""
    reach = lookback_reach(table)
    if not reach:
        return False
    opening = opening_night(season_of(day))
    if (day - opening).days >= reach:
        return False
    played = sum(
        _scheduled(d, window, calendar)
        for d in (day - timedelta(days=k) for k in range(1, reach + 1))
        if d >= opening
    )
    return played < LEAGUE_ROUND_GAMES


def _remembered(window: Window, key: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per window: what it derives depends only on the window's stats."""
    if key not in window.memo:
        window.memo[key] = compute()
    return window.memo[key]


def expected_games(table: Table, day: date, window: Window, calendar: Calendar | None) -> int:
    """Games on ``day``: the source's calendar when it knows, else the schedule table; none
    for a lookback table while the season's first games fill its lookback.

    The schedule cannot vouch for itself: without a calendar, a schedule with no rows on a date
    where other raw tables have rows is missing (at least one game).
    """
    return _remembered(
        window,
        ("games", table.name, day, calendar),
        lambda: _expected_games(table, day, window, calendar),
    )


def _expected_games(table: Table, day: date, window: Window, calendar: Calendar | None) -> int:
    if season_filling(table, day, window, calendar):
        return 0
    known = calendar(day) if calendar else None
    if known is not None:
        return known
    scheduled = window.games(day)
    if table is SCHEDULE and scheduled == 0:
        siblings = (t for t in in_phase(2) if t is not SCHEDULE)
        return 1 if any(window.rows(t, day) for t in siblings) else 0
    return scheduled


@dataclass(frozen=True)
class Expectation:
    games: int
    floor: int
    learned: int | None
    history_days: int
    ceiling: int = 0  # what the games can produce at most
    learned_ceiling: int | None = None

    @property
    def bound(self) -> int:
        return max(self.floor, self.learned or 0)

    @property
    def upper(self) -> int:
        """At most this many rows: the games' ceiling, tightened by recent game days."""
        if self.learned_ceiling is None:
            return self.ceiling
        return min(self.ceiling, self.learned_ceiling)

    def upper_text(self, table: Table) -> str:
        """How the ceiling was derived, for a person."""
        rule = table.rows
        made = f"{rule.max_per_game:g} per game x {self.games}"
        if self.learned_ceiling is not None and self.learned_ceiling < self.ceiling:
            return (
                f"{rule.history_ceiling:g} x the median rows per game of the last "
                f"{self.history_days} game days x {self.games} (the games allow {self.ceiling}: "
                f"{made})"
            )
        return made


def expectation(table: Table, day: date, window: Window, calendar: Calendar | None) -> Expectation:
    """Floor and ceiling per scheduled game, tightened by a volume bound once enough game
    days exist.

    The learned bounds are ``history_fraction`` (floor) and ``history_ceiling`` (ceiling) of
    the median rows-per-game over the table's last ``history_window`` earlier game days that
    have rows, once ``history_min_days`` exist.
    """
    return _remembered(
        window,
        ("expectation", table.name, day, calendar),
        lambda: _expectation(table, day, window, calendar),
    )


def _expectation(table: Table, day: date, window: Window, calendar: Calendar | None) -> Expectation:
    games = expected_games(table, day, window, calendar)
    rule = table.rows
    floor = math.ceil(rule.min_per_game * games)
    ceiling = math.floor(rule.max_per_game * games)
    per_game = []
    for offset in range(1, HISTORY_DAYS + 1):
        earlier = day - timedelta(days=offset)
        if earlier < window.start or len(per_game) == rule.history_window:
            break
        past_games = expected_games(table, earlier, window, calendar)
        rows = window.rows(table, earlier)
        if past_games and rows:
            per_game.append(rows / past_games)
    learned = learned_ceiling = None
    if games and len(per_game) >= rule.history_min_days:
        typical = median(per_game) * games
        learned = math.ceil(rule.history_fraction * typical)
        learned_ceiling = math.floor(rule.history_ceiling * typical)
    return Expectation(
        games=games,
        floor=floor,
        learned=learned,
        history_days=len(per_game),
        ceiling=ceiling,
        learned_ceiling=learned_ceiling,
    )


def deadline(table: Table, day: date) -> datetime:
    d = table.deadline
    return eastern(day + timedelta(days=d.days_after), d.hour, d.minute)


def row_count(
    table: Table, day: date, window: Window, now: datetime, calendar: Calendar | None = None
) -> CheckOutcome:
    exp = expectation(table, day, window, calendar)
    rows = window.rows(table, day)
    due = deadline(table, day)
    meta = {
        "rows": rows,
        "expected_min": exp.bound,
        "expected_max": exp.upper,
        "ceiling": exp.upper_text(table),
        "games": exp.games,
        "floor": exp.floor,
        "learned_bound": exp.learned,
        "history_game_days": exp.history_days,
        "deadline": due,
        "evaluated_at": now,
    }

    def out(status: Status, reason: str) -> CheckOutcome:
        return CheckOutcome(
            table, "row_count", day, status, reason, {**meta, "status": str(status)}
        )

    if exp.games == 0:
        return out(Status.NO_GAMES, f"no games on {day}; {rows} rows")
    if rows == 0:
        if now < due:
            return out(Status.NOT_DUE, f"no rows yet; due {due:%Y-%m-%d %H:%M %Z}")
        return out(Status.MISSING, f"0 rows for {exp.games} games (expected >= {exp.bound})")
    if rows < exp.bound:
        return out(Status.SHORT, f"{rows} rows for {exp.games} games (expected >= {exp.bound})")
    if rows > exp.upper:
        return out(
            Status.SPIKE,
            f"{rows} rows for {exp.games} games: more than they can produce "
            f"(at most {exp.upper}: {exp.upper_text(table)})",
        )
    return out(Status.OK, f"{rows} rows for {exp.games} games ({exp.bound}..{exp.upper})")


def read_partitions(table: Table, day: date) -> list[tuple[Table, date]]:
    """The upstream partitions that ``table`` for ``day`` reads, from the registry."""
    out = []
    for u in table.upstream:
        up = BY_NAME[u.table]
        if u.is_lookback:
            out += [(up, day - timedelta(days=i)) for i in range(1, u.lookback_days + 1)]
        else:
            out.append((up, day))
    return out


def freshness(
    table: Table, day: date, window: Window, now: datetime, calendar: Calendar | None = None
) -> CheckOutcome:
    due = deadline(table, day)
    stats = window.stats.get(table.name, {}).get(day)
    games = expected_games(table, day, window, calendar)
    loaded_at = stats.loaded_at if stats else None
    meta: dict[str, Any] = {
        "loaded_at": loaded_at,
        "deadline": due,
        "games": games,
        "evaluated_at": now,
    }

    def out(status: Status, reason: str, **extra: Any) -> CheckOutcome:
        return CheckOutcome(
            table, "freshness", day, status, reason, {**meta, **extra, "status": str(status)}
        )

    if loaded_at is None:
        if games == 0:
            return out(Status.NO_GAMES, f"no games on {day}")
        if now < due:
            return out(Status.NOT_DUE, f"not loaded yet; due {due:%Y-%m-%d %H:%M %Z}")
        return out(Status.MISSING, f"not loaded by its deadline {due:%Y-%m-%d %H:%M %Z}")
    newest: tuple[datetime, Table, date] | None = None
    for up, up_day in read_partitions(table, day):
        found = window.stats.get(up.name, {}).get(up_day)
        if found and found.loaded_at and (newest is None or found.loaded_at > newest[0]):
            newest = (found.loaded_at, up, up_day)
    if newest and newest[0] > loaded_at:
        up_at, up, up_day = newest
        return out(
            Status.STALE,
            f"computed before {up.key} {up_day} was reloaded",
            stale_upstream=up.key,
            stale_upstream_date=up_day.isoformat(),
            stale_upstream_loaded_at=up_at,
        )
    if loaded_at > due:
        delay = (loaded_at - due).total_seconds() / 60
        return out(
            Status.LATE, f"arrived {_human(delay)} after its deadline", delay_minutes=round(delay)
        )
    return out(Status.OK, f"loaded {loaded_at:%Y-%m-%d %H:%M} UTC, before its deadline")


def _human(minutes: float) -> str:
    if minutes < 120:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.0f} h"
    return f"{minutes / 1440:.0f} days"


def key_integrity(
    table: Table, day: date, window: Window, now: datetime, calendar: Calendar | None = None
) -> CheckOutcome:
    """The row key never NULL and never twice in the partition (a doubled load, a retried
    POST whose first call also landed, a manual insert)."""
    stats = window.stats.get(table.name, {}).get(day)
    columns = "/".join(table.row_key)
    meta: dict[str, Any] = {
        "key": columns,
        "rows": stats.rows if stats else 0,
        "duplicated_keys": stats.duplicated if stats else 0,
        "null_keys": stats.null_keys if stats else 0,
        "example": stats.example if stats else None,
        "evaluated_at": now,
    }

    def out(status: Status, reason: str) -> CheckOutcome:
        return CheckOutcome(table, "key", day, status, reason, {**meta, "status": str(status)})

    if stats is None or not stats.rows:
        return out(Status.OK, f"no rows on {day}: no key to check")
    if stats.duplicated is None:
        return out(Status.OK, "keys not counted by this read (partition metadata)")
    if stats.null_keys:
        return out(
            Status.NULL_KEY, f"{stats.null_keys} of {stats.rows} rows have a NULL in ({columns})"
        )
    if stats.duplicated:
        return out(
            Status.DUPLICATE,
            f"{stats.duplicated} keys ({columns}) appear more than once in {stats.rows} rows "
            f"(e.g. {stats.example})",
        )
    return out(Status.OK, f"{stats.rows} rows, each ({columns}) once")


EVALUATORS = {"row_count": row_count, "freshness": freshness, "key": key_integrity}


class MissingInput(RuntimeError):
    """A partition a processor reads is missing or short: computing now would replace good
    rows with a computation on missing input."""


def input_problem(
    up: Table, up_day: date, window: Window, calendar: Calendar | None = None
) -> str | None:
    """Why a partition may not be read by a processor (missing, short, doubled, a key
    twice), or None: on a game day it must hold between the bounds its own row-count check
    applies, and no key twice when the read counted keys."""
    exp = expectation(up, up_day, window, calendar)
    if not exp.games:
        return None
    rows = window.rows(up, up_day)
    stats = window.stats.get(up.name, {}).get(up_day)
    if rows == 0:
        return f"{up.key} {up_day} has no rows"
    if rows < exp.bound:
        return f"{up.key} {up_day} has {rows} rows (expected >= {exp.bound})"
    if rows > exp.upper:
        return f"{up.key} {up_day} has {rows} rows (at most {exp.upper})"
    if stats and (stats.duplicated or stats.null_keys):
        return f"{up.key} {up_day} has duplicated or NULL keys"
    return None


def broken_inputs(
    table: Table,
    day: date,
    window: Window,
    calendar: Calendar | None = None,
    problems: dict[tuple[str, date], str | None] | None = None,
) -> list[tuple[Table, date, str]]:
    """The partitions ``table`` for ``day`` reads that are broken (``input_problem``), with
    why; only on a game day (a no-game day computes zero rows whatever it reads).
    ``problems``: a cache of ``input_problem`` over one window, shared across calls."""
    if not expected_games(table, day, window, calendar):
        return []
    known = problems if problems is not None else {}
    out = []
    for up, up_day in read_partitions(table, day):
        if (up.name, up_day) not in known:
            known[(up.name, up_day)] = input_problem(up, up_day, window, calendar)
        why = known[(up.name, up_day)]
        if why is not None:
            out.append((up, up_day, why))
    return out


def broken_map(
    window: Window, calendar: Calendar | None, judgeable_from: Mapping[str, date]
) -> dict[tuple[str, date], tuple[tuple[str, date], ...]]:
    """Every partition of the window with a broken input, and those inputs (asset key and
    date), each input judged once; a table's dates before ``judgeable_from[name]`` are left
    out (its lookback and the history behind the bounds are not in the window)."""
    problems: dict[tuple[str, date], str | None] = {}
    out = {}
    for table in TABLES:
        for day in window.days:
            if day < judgeable_from[table.name]:
                continue
            found = broken_inputs(table, day, window, calendar, problems)
            if found:
                out[(table.key, day)] = tuple((t.key, d) for t, d, _ in found)
    return out


Broken = tuple[Table, date, str]


def missing_inputs_line(table: Table, problems: Mapping[date, Sequence[Broken]]) -> str:
    """One line for a processor that refused dates: each input table once, with how many of
    its game days are missing or short and their first..last dates (the per-date list is for
    the event log)."""
    missing: dict[str, set[date]] = {}
    short: dict[str, set[date]] = {}
    doubled: dict[str, set[date]] = {}
    for found in problems.values():
        for up, up_day, why in found:
            kind = (
                missing
                if why.endswith("has no rows")
                else doubled
                if "at most" in why or "keys" in why
                else short
            )
            kind.setdefault(up.key, set()).add(up_day)
    parts = []
    for key in sorted(set(missing) | set(short) | set(doubled), key=lambda k: BY_KEY[k].phase):
        said = []
        for what, days in (
            ("missing", missing.get(key)),
            ("short", short.get(key)),
            ("doubled", doubled.get(key)),
        ):
            if days:
                n = len(days)
                said.append(f"{n} game day{'s' if n > 1 else ''} {what}, {first_last(days)}")
        parts.append(f"{key}: {'; '.join(said)}")
    shown = listed(parts, 3, noun="tables")
    return f"{table.key} {span_text(problems)} not computed, its inputs are broken: {shown}"


def missing_inputs_detail(table: Table, problems: Mapping[date, Sequence[Broken]]) -> str:
    """Every date and input, a line each: the event log's copy of ``missing_inputs_line``."""
    return "\n".join(
        f"{table.key} {day} not computed: " + "; ".join(why for *_, why in found)
        for day, found in sorted(problems.items())
    )


def input_window(table: Table, day: date) -> tuple[date, list[Table]]:
    """Where ``broken_inputs`` looks: from the history behind the volume bound of the oldest
    date read, over what ``table`` reads plus the raw tables that vouch for the schedule."""
    tables = {t.name: t for t in in_phase(2)}
    tables.update({u.table: BY_NAME[u.table] for u in table.upstream})
    return day - timedelta(days=table.lookback_days + HISTORY_DAYS), list(tables.values())


def window_start(days: Iterable[date]) -> date:
    """First date a window must hold to evaluate ``days``: history and lookback included."""
    return min(days) - timedelta(days=WINDOW_BACK)


def evaluate(
    targets: Iterable[tuple[Table, date]],
    window: Window,
    now: datetime,
    calendar: Calendar | None = None,
    checks: Sequence[str] = CHECKS,
) -> list[CheckOutcome]:
    return [
        EVALUATORS[name](table, day, window, now, calendar)
        for table, day in targets
        for name in checks
    ]


def completeness(outcomes: Iterable[CheckOutcome]) -> dict[str, Any]:
    """The shape the old cloud function returned, per phase, for one date."""
    outcomes = list(outcomes)
    missing = []
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.check == "row_count":
            counts[o.table.name] = o.metadata["rows"]
        if o.heals and o.table.name not in missing:
            missing.append(o.table.name)
    return {
        "is_complete": not missing,
        "missing_processors": missing,
        "record_counts": counts,
    }


def worst(outcomes: Iterable[CheckOutcome]) -> CheckOutcome:
    return min(outcomes, key=lambda o: SEVERITY_ORDER.index(o.status))


def tables_for(table: Table) -> list[Table]:
    """What evaluating ``table``'s checks reads: itself, the schedule, what it reads, and (for
    the schedule) the raw tables that vouch for games when no calendar is known."""
    needed = {table.name: table, SCHEDULE.name: SCHEDULE}
    needed.update({u.table: BY_NAME[u.table] for u in table.upstream})
    if table is SCHEDULE:
        needed.update({t.name: t for t in in_phase(2)})
    return list(needed.values())
