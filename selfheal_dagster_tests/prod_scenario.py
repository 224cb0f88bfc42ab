"""A day of production work, through the BigQuery warehouse: what the strict double and
ZetaSQL judge (tests of the production path share it)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from selfheal_dagster.adapters.league import League
from selfheal_dagster.core import history
from selfheal_dagster.core.history import HealingResult, HealRecord
from selfheal_dagster.tables import BY_NAME, TABLES, execution_order, in_phase

DAY = date(2026, 1, 20)
BOX = BY_NAME["bdl_player_boxscores"]
HISTORY_DAYS = 31  # Phase 4's longest lookback, and one more
RANGE = [DAY - timedelta(days=2), DAY - timedelta(days=1), DAY]


def record(**changes) -> HealRecord:
    base = HealRecord(
        phase="phase2",
        target_date=DAY,
        missing_components=[BOX.name],
        healing_result=HealingResult(triggered=True, reason="0 rows"),
        correlation_id="a1b2c3d4-0000-4000-8000-000000000000",
        timestamp=datetime(2026, 1, 21, 15, tzinfo=UTC),
        detected_at=datetime(2026, 1, 21, 15, tzinfo=UTC),
        assets=[BOX.key],
        cause="bdl_player_boxscores row_count: 0 rows for 7 games (expected >= 112)",
    )
    return replace(base, **changes)


def load_phase2(wh, league: League, days: list[date]) -> None:
    """Each Phase 2 table: the range staged and merged, then the last date on its own."""
    for table in in_phase(2):
        wh.replace_partitions(table, {d: league.feed(table.feed, d) for d in days[:-1]})
        wh.replace_partition(table, days[-1], league.feed(table.feed, days[-1]))


def history_days() -> list[date]:
    return [DAY - timedelta(days=i) for i in range(HISTORY_DAYS, -1, -1)]


def init_with_history(wh) -> None:
    """Datasets and tables, and Phase 2 for DAY and the month before it."""
    from selfheal_dagster.adapters.settings import DEFAULT_SEED

    wh.ensure_tables()
    load_phase2(wh, League(DEFAULT_SEED), history_days())


def run(wh, league: League) -> None:
    """init, Phase 2 loads (ranged and one date, and an empty date), one-date and ranged
    Phase 4, the sweep's metadata read and the checks' read, the heal history, a gap."""
    wh.ensure_tables()
    wh.ensure_tables()  # idempotent
    load_phase2(wh, league, history_days())
    wh.replace_partition(BOX, DAY - timedelta(days=HISTORY_DAYS + 1), [])  # an empty date
    for table in execution_order(in_phase(4)):
        wh.run_processor(table, [DAY])
        wh.run_processor(table, RANGE)
    wh.window_stats(TABLES, DAY - timedelta(days=3), DAY, metadata=True)  # the sweep
    wh.window_stats(TABLES, DAY - timedelta(days=30), DAY)  # a check, the input guard
    mine = record()
    wh.insert_history(mine)
    wh.insert_histories([mine, record(target_date=DAY + timedelta(days=1), attempt=2)])
    wh.update_history(mine.resolved(history.Outcome.HEALED, mine.timestamp, "healed", "r1"))
    wh.update_history(mine, columns=history.OUTCOME_COLUMNS)
    wh.note_alert(mine.id, {"kind": "parent", "key": "parent", "delivered": True, "ts": "1.1"})
    wh.history(day=DAY, correlation_id="a1b2", since=mine.timestamp, until=mine.timestamp)
    wh.history()
    wh.punch_gap(BOX, DAY, keep=0.5)
    wh.punch_gap(BOX, DAY)
