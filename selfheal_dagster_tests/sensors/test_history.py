"""Heal history and alerts through the heal sensor, with a real instance, DuckDB and HTTP."""

import json
import logging
from datetime import timedelta

import pytest

from selfheal_dagster.core import heal_state, names
from selfheal_dagster.core.history import Outcome, record_id
from selfheal_dagster.tables import BY_NAME
from selfheal_dagster_tests.support import GAME_DAY, SweepingLoop

BOX = BY_NAME["bdl_player_boxscores"]
ODDS = BY_NAME["odds_api_game_lines"]


@pytest.fixture
def slack_loop(history, instance, httpserver, monkeypatch):
    """The loop with alerts going to a Slack webhook on 127.0.0.1."""
    monkeypatch.setenv("SLACK_WEBHOOK_URL", httpserver.url_for("/services/T0/B0/secret"))
    from selfheal_dagster.definitions import defs as load

    return SweepingLoop(load(), instance, history)


def webhook_titles(httpserver):
    return [json.loads(r.get_data())["attachments"][0]["title"] for r, _ in httpserver.log]


def test_history_ids_and_the_incident_alerts_are_written_once(slack_loop, httpserver):
    httpserver.expect_request("/services/T0/B0/secret").respond_with_data("ok")
    slack_loop.warehouse.punch_gap(BOX, GAME_DAY)
    slack_loop.sweep()
    before = slack_loop.cursor
    [request] = slack_loop.tick().run_requests
    cid = request.tags[names.CORRELATION_ID]
    # The same tick evaluated again (the daemon retries a failed tick): nothing new.
    slack_loop.sensor.evaluate_tick(slack_loop.context(before))
    [record] = slack_loop.warehouse.history(day=GAME_DAY)
    assert record.id == record_id(GAME_DAY, "phase2", cid) == f"{GAME_DAY}_phase2_{cid[:8]}"
    assert webhook_titles(httpserver) == ["🔧 Self-Heal Triggered: Phase 2"]
    assert [(a["kind"], a["key"], a["via"], a["delivered"]) for a in record.alerts] == [
        ("open", "open", "webhook", True)
    ]
    doc = record.document()
    assert {
        "phase",
        "target_date",
        "missing_components",
        "healing_result",
        "correlation_id",
        "timestamp",
        "success",
    } <= set(doc)
    assert doc["healing_result"] == {
        "triggered": True,
        "failed": False,
        "skipped": False,
        "reason": doc["healing_result"]["reason"],
    }
    # Success: the outcome is recorded once, even if verified twice; the incident closes at
    # the next tick, and its closing message is sent once.
    run = slack_loop.run(request)
    assert slack_loop.verify(run.run_id)[0] == "healed"
    slack_loop.verify(run.run_id)
    slack_loop.tick()
    slack_loop.tick()
    heal, closed = sorted(slack_loop.warehouse.history(day=GAME_DAY), key=lambda r: r.timestamp)
    assert heal.outcome is Outcome.HEALED and heal.success is True
    assert heal.run_ids == [run.run_id] and heal.seconds_to_heal > 0
    assert closed.outcome is Outcome.CLOSED and closed.id == f"{heal.id}_closed"
    assert webhook_titles(httpserver) == [
        "🔧 Self-Heal Triggered: Phase 2",
        "✅ Self-Heal Healed: Phase 2",
    ]
    assert [a["key"] for a in heal.alerts] == ["open", "close"]


def test_slack_answering_500_still_heals_and_writes_history_with_one_warning(
    slack_loop, httpserver, caplog
):
    httpserver.expect_request("/services/T0/B0/secret").respond_with_data("oops", status=500)
    slack_loop.warehouse.punch_gap(BOX, GAME_DAY)
    slack_loop.sweep()
    with caplog.at_level(logging.WARNING, logger="selfheal.alerts"):
        data = slack_loop.tick()
    assert len(data.run_requests) == 1  # the heal run is launched regardless
    [record] = slack_loop.warehouse.history(day=GAME_DAY)
    assert record.outcome is Outcome.TRIGGERED
    assert record.alerts[0]["delivered"] is False
    assert len(httpserver.log) == 3
    warnings = [r for r in caplog.records if r.name == "selfheal.alerts"]
    assert len(warnings) == 1
    assert "secret" not in caplog.text


def test_outcomes_failure_and_gave_up_are_recorded(slack_loop, httpserver, monkeypatch):
    httpserver.expect_request("/services/T0/B0/secret").respond_with_data("ok")
    monkeypatch.setenv("SELFHEAL_LEAGUE_OUTAGES", f"bdl_player_boxscores@{GAME_DAY}")
    from selfheal_dagster.definitions import defs as load
    from selfheal_dagster.defs.heal import heal_tick

    slack_loop.defs = load()
    slack_loop.warehouse.punch_gap(BOX, GAME_DAY)
    policy = heal_state.Policy(max_attempts=2, backoff_seconds=0)
    for _ in range(4):
        slack_loop.sweep()
        result = heal_tick(slack_loop.context(), slack_loop.warehouse, policy)
        slack_loop.cursor = result.cursor
        for request in result.run_requests:
            slack_loop.verify(slack_loop.run(request).run_id)
    slack_loop.deliver()
    records = slack_loop.warehouse.history(day=GAME_DAY)
    assert sorted(str(r.outcome) for r in records) == ["closed", "failed", "failed", "gave_up"]
    assert all(r.success is False for r in records if r.outcome is not Outcome.CLOSED)
    gave_up = next(r for r in records if r.outcome is Outcome.GAVE_UP)
    assert gave_up.healing_result.failed and not gave_up.healing_result.triggered
    assert gave_up.id == f"{record_id(GAME_DAY, 'phase2', gave_up.correlation_id)}_gave_up"
    # The webhook cannot thread: the incident's opening, then its closing page.
    assert webhook_titles(httpserver) == [
        "🔧 Self-Heal Triggered: Phase 2",
        f"🚨 Self-Heal Gave Up: bdl_player_boxscores {GAME_DAY} — needs a person",
    ]


def test_queries_by_date_and_by_correlation_id_return_exactly_the_related_records(
    slack_loop, httpserver
):
    httpserver.expect_request("/services/T0/B0/secret").respond_with_data("ok")
    other = GAME_DAY - timedelta(days=1)
    slack_loop.warehouse.punch_gap(BOX, GAME_DAY)
    slack_loop.sweep()
    [first] = slack_loop.tick().run_requests
    slack_loop.verify(slack_loop.run(first).run_id)  # the daemon launches it; it heals
    slack_loop.warehouse.punch_gap(ODDS, other)
    slack_loop.sweep()
    [second] = slack_loop.tick().run_requests
    a, b = first.tags[names.CORRELATION_ID], second.tags[names.CORRELATION_ID]
    assert a != b

    def heals(records):  # the incident's heal records, not its closing marker
        return [r for r in records if not r.closing]

    assert [r.target_date for r in heals(slack_loop.warehouse.history(correlation_id=a))] == [
        GAME_DAY
    ]
    assert [r.target_date for r in heals(slack_loop.warehouse.history(correlation_id=b[:8]))] == [
        other
    ]
    assert [r.correlation_id for r in slack_loop.warehouse.history(day=other)] == [b]
    assert len(heals(slack_loop.warehouse.history())) == 2
    assert slack_loop.warehouse.history(correlation_id="ffffffff") == []


def test_the_heal_tick_sends_nothing_to_slack_the_alerts_sensor_does(slack_loop, httpserver):
    """Slack is off the heal path: whatever it does, the tick that requests the run never
    waits on it; the alerts sensor then sends what the history owes, once."""
    httpserver.expect_request("/services/T0/B0/secret").respond_with_data("ok")
    slack_loop.warehouse.punch_gap(BOX, GAME_DAY)
    slack_loop.sweep()
    data = slack_loop.sensor.evaluate_tick(slack_loop.context())
    assert len(data.run_requests) == 1 and httpserver.log == []
    [record] = slack_loop.warehouse.history(day=GAME_DAY)
    assert record.alerts == []  # owed, not yet sent
    alerts_sensor = slack_loop.defs.resolve_sensor_def("alerts_sensor")
    for _ in range(2):  # a second tick owes nothing more
        alerts_sensor.evaluate_tick(slack_loop.context())
    assert webhook_titles(httpserver) == ["🔧 Self-Heal Triggered: Phase 2"]
    [record] = slack_loop.warehouse.history(day=GAME_DAY)
    assert [a["kind"] for a in record.alerts] == ["open"]


def test_an_outcome_and_an_alert_note_written_at_once_keep_each_other(history):
    """The alerts sensor notes an alert while an outcome sensor closes the same record:
    neither write may undo the other (each touches only its own columns)."""
    from datetime import UTC, datetime

    from selfheal_dagster.core.history import OUTCOME_COLUMNS, HealingResult, HealRecord

    record = HealRecord(
        phase="phase2",
        target_date=GAME_DAY,
        missing_components=["bdl_player_boxscores"],
        healing_result=HealingResult(triggered=True, reason="0 rows"),
        correlation_id="c0ffee00-0000-4000-8000-000000000000",
        timestamp=datetime.now(UTC),
    )
    assert history.insert_history(record)
    stale_copy = history.history(day=GAME_DAY)[0]  # what the alerts sensor read earlier
    closed = record.resolved(Outcome.HEALED, datetime.now(UTC), "healed", "run-1")
    history.update_history(closed, OUTCOME_COLUMNS)
    history.note_alert(stale_copy.id, {"kind": "open", "key": "open", "delivered": True})
    [stored] = history.history(day=GAME_DAY)
    assert stored.outcome is Outcome.HEALED and stored.run_ids == ["run-1"]
    assert [a["kind"] for a in stored.alerts] == ["open"]


def test_the_heal_history_asset_counts_one_eastern_day_as_numeric_metadata(env, instance, defs):
    """Records triggered in the day (US/Eastern) are counted with their outcomes; a record
    from just before midnight ET belongs to the day before."""
    from datetime import UTC, datetime

    import dagster as dg

    from selfheal_dagster import runs
    from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
    from selfheal_dagster.core.history import HealingResult, HealRecord
    from selfheal_dagster.defs.metrics import HEAL_HISTORY, METRICS_JOB

    wh = DuckDBWarehouse(env / "warehouse.duckdb")
    wh.ensure_tables()
    day = GAME_DAY + timedelta(days=1)
    # 2026-01-21 in New York is [05:00 UTC on the 21st, 05:00 UTC on the 22nd).
    at = datetime(2026, 1, 21, 15, 0, tzinfo=UTC)

    def heal(n, outcome, detected_s, healed_s=None, when=at):
        base = HealRecord(
            phase="phase2",
            target_date=GAME_DAY,
            missing_components=[BOX.name],
            healing_result=HealingResult(triggered=True),
            correlation_id=f"cid-{n:04d}-0000",
            timestamp=when,
            detected_at=when - timedelta(seconds=detected_s),
        )
        if outcome is Outcome.TRIGGERED:
            return base
        return base.resolved(outcome, base.detected_at + timedelta(seconds=healed_s or 1), "x")

    records = [
        heal(1, Outcome.HEALED, 10, 40),
        heal(2, Outcome.HEALED, 20, 100),
        heal(3, Outcome.HEALED, 30, 60),
        heal(4, Outcome.FAILED, 5),
        heal(5, Outcome.TRIGGERED, 7),
        heal(6, Outcome.HEALED, 1, 1, when=datetime(2026, 1, 21, 4, 59, tzinfo=UTC)),  # the 20th
        heal(7, Outcome.HEALED, 1, 1, when=datetime(2026, 1, 22, 5, 0, tzinfo=UTC)),  # the 22nd
    ]
    for r in records:
        wh.insert_history(r)
    result = runs.execute(
        defs.resolve_job_def(METRICS_JOB), instance, tags={"dagster/partition": day.isoformat()}
    )
    assert result.success
    [event] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=HEAL_HISTORY, asset_partitions=[day.isoformat()]),
        limit=5,
    ).records
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert (meta["triggered"], meta["healed"], meta["failed"], meta["open"]) == (5, 3, 1, 1)
    assert meta["gave_up"] == 0 and meta["skipped"] == 0
    assert meta["median_seconds_to_heal"] == 60.0  # of 40, 100, 60
    assert meta["median_seconds_to_trigger"] == 10.0  # of 10, 20, 30, 5, 7
    assert meta["has_timings"] is True
    # A day without heals: zeros, flagged as having no timings (a plot still gets a point).
    empty = GAME_DAY - timedelta(days=5)
    runs.execute(
        defs.resolve_job_def(METRICS_JOB), instance, tags={"dagster/partition": empty.isoformat()}
    )
    [event] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=HEAL_HISTORY, asset_partitions=[empty.isoformat()]),
        limit=5,
    ).records
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert meta["triggered"] == 0 and meta["has_timings"] is False


def test_the_metrics_schedule_asks_for_today_and_after_midnight_yesterday_too():
    from selfheal_dagster.core.dates import eastern
    from selfheal_dagster.defs.metrics import metrics_requests

    noon = metrics_requests(eastern(GAME_DAY, 12, 5))
    assert [r.partition_key for r in noon] == [GAME_DAY.isoformat()]
    night = metrics_requests(eastern(GAME_DAY, 0, 5))
    assert [r.partition_key for r in night] == [
        (GAME_DAY - timedelta(days=1)).isoformat(),
        GAME_DAY.isoformat(),
    ]
    assert len({r.run_key for r in noon + night}) == 3  # hourly keys never collide
