"""Alerts against a real Slack Web API and webhook on 127.0.0.1: one story per incident.

The incident tests run the real sweep, heal sensor, heal runs and outcome checks in-process
(``LocalLoop``) on a real instance and DuckDB file, with Slack served by pytest-httpserver.
The sink tests below them hold Slack's failures to their bounds.
"""

import json
import logging
from datetime import UTC, date, datetime, timedelta

import pytest
from werkzeug import Response

from selfheal_dagster.adapters import alerts
from selfheal_dagster.core import messages
from selfheal_dagster.core.dates import EASTERN, span_text
from selfheal_dagster.core.history import HealingResult, HealRecord
from selfheal_dagster.core.incidents import Incident
from selfheal_dagster.defs.resources import AlertsResource
from selfheal_dagster.tables import BY_NAME, execution_order, in_phase
from selfheal_dagster_tests.slack import FakeSlack
from selfheal_dagster_tests.support import GAME_DAY, SweepingLoop, load_phase2

TOKEN = "xoxb-0000-secret-token-do-not-log"
CID = "a1b2c3d4-1111-2222-3333-444455556666"
BOX = BY_NAME["bdl_player_boxscores"]
HOOK = "/services/T0/B0/secret"


def record(**changes) -> HealRecord:
    base = HealRecord(
        phase="phase2",
        target_date=date(2026, 1, 21),
        missing_components=["bdl_player_boxscores", "odds_api_game_lines"],
        healing_result=HealingResult(triggered=True, reason="0 rows"),
        correlation_id=CID,
        timestamp=datetime(2026, 1, 22, 15, 0, tzinfo=UTC),
        detected_at=datetime(2026, 1, 22, 15, 0, tzinfo=UTC),
        assets=["nba_raw/bdl_player_boxscores", "nba_raw/odds_api_game_lines"],
        cause=(
            "bdl_player_boxscores row_count: 0 rows for 7 games (expected >= 112); "
            "odds_api_game_lines row_count: 120 rows for 7 games (expected >= 168)"
        ),
    )
    return HealRecord(**{**base.__dict__, **changes})


def message() -> messages.Message:
    return messages.parent(Incident.of(CID, [record()]), max_attempts=3)


def fast(**kw) -> alerts.Delivery:
    return alerts.Delivery(backoff_seconds=0.05, **kw)


def test_the_parent_keeps_the_familiar_layout_and_says_what_broke_and_what_will_run(httpserver):
    httpserver.expect_oneshot_request(HOOK, method="POST").respond_with_data("ok")
    refresh = [
        record(
            phase="phase4",
            target_date=date(2026, 1, 22) + timedelta(days=i),
            missing_components=[],
            cause="",
            healing_result=HealingResult(triggered=True, reason="refresh"),
        )
        for i in range(11)
    ]
    incident = Incident.of(CID, [record(), *refresh])
    sink = alerts.WebhookSink(url=httpserver.url_for(HOOK), delivery=fast())
    assert sink.send(messages.parent(incident, max_attempts=3)) is True
    [(request, _)] = httpserver.log
    [attachment] = json.loads(request.get_data())["attachments"]
    assert attachment["color"] == "#FFA500"
    assert attachment["title"] == "🔧 Self-Heal Triggered: Phase 2"
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert [f["title"] for f in attachment["fields"]] == [
        "Date",
        "Phase",
        "Healing Triggered",
        "Correlation ID",
        "Plan",
        "Status",
        "Missing Components",
    ]
    assert fields["Date"] == "2026-01-21" and fields["Phase"] == "Phase 2"
    assert fields["Healing Triggered"] == "✅ Yes" and fields["Correlation ID"] == f"`{CID}`"
    assert fields["Plan"] == (
        "bdl_player_boxscores 2026-01-21 missing, odds_api_game_lines 2026-01-21 short → "
        "reload bdl_player_boxscores, odds_api_game_lines 2026-01-21, "
        "then refresh Phase 4 2026-01-22..2026-02-01, 11 dates"
    )
    assert fields["Status"] == "🔧 Healing: attempt 1 of 3 running"
    assert fields["Missing Components"].splitlines() == [
        "• bdl_player_boxscores 2026-01-21 missing",
        "• odds_api_game_lines 2026-01-21 short",
    ]


# --- incidents end to end ---------------------------------------------------------------------


@pytest.fixture
def bot(monkeypatch, httpserver):
    slack = FakeSlack()
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_CHANNEL", "#nba-alerts")
    monkeypatch.setenv("SELFHEAL_SLACK_API_URL", slack.install(httpserver))
    monkeypatch.setenv("SELFHEAL_HEAL_BACKOFF_SECONDS", "0")
    return slack


@pytest.fixture
def webhook(monkeypatch, httpserver):
    httpserver.expect_request(HOOK, method="POST").respond_with_data("ok")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", httpserver.url_for(HOOK))
    monkeypatch.setenv("SELFHEAL_HEAL_BACKOFF_SECONDS", "0")

    def posted() -> list[dict]:
        return [json.loads(r.get_data()) for r, _ in httpserver.log]

    return posted


def loop_for(history, instance):
    from selfheal_dagster.definitions import defs as load

    return SweepingLoop(load(), instance, history)


def refresh_days(loop, league, count: int) -> list[date]:
    """Phase 2 and Phase 4 for the game days after GAME_DAY until ``count`` of them: the
    Phase 4 dates whose lookback reads GAME_DAY's box scores."""
    days, day = [], GAME_DAY
    while len(days) < count:
        day += timedelta(days=1)
        if league.games_on(day):
            days.append(day)
    load_phase2(loop.warehouse, league, GAME_DAY + timedelta(days=2), days[-1])
    for t in execution_order(in_phase(4)):
        loop.warehouse.run_processor(t, days)
    return days


def fields(post) -> dict[str, str]:
    return {f["title"]: f["value"] for f in post.attachments[0]["fields"]}


def test_a_box_score_fault_with_a_10_date_refresh_is_one_parent_and_its_thread(
    history, instance, league, bot
):
    loop = loop_for(history, instance)
    days = refresh_days(loop, league, 10)
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    runs = loop.heal_until_quiet()
    assert [r.outcome for r in runs] == ["healed", "healed"]  # the reload, one ranged refresh
    [parent] = bot.top_level  # one message in the channel
    assert parent.channel == "#nba-alerts" and bot.tokens[0] == f"Bearer {TOKEN}"
    assert parent.title == "🔧 Self-Heal Triggered: Phase 2"
    assert fields(parent)["Plan"] == (
        f"bdl_player_boxscores {GAME_DAY} missing → reload it, "
        f"then refresh Phase 4 {span_text(days)}"
    )
    assert span_text(days).endswith(", 10 dates")
    assert fields(parent)["Status"] == "🔧 Healing: attempt 1 of 3 running"
    # The attempt and its outcome are one reply in its thread.
    [reply] = bot.replies(parent.ts)
    assert reply.text.splitlines()[:3] == [
        "✅ Attempt 1 healed everything",
        f"✅ reloaded bdl_player_boxscores {GAME_DAY}",
        f"✅ refreshed Phase 4 {span_text(days)}",
    ]
    # The parent's status line is edited in place: healed, in green.
    shown = bot.shown(parent.ts)
    assert shown.method == "chat.update" and fields(shown)["Status"].startswith(
        "✅ Healed on attempt 1"
    )
    assert shown.color == "#2EB67D"
    assert not any("Skipped" in c.body for c in bot.calls)
    # Said once: the loop and the alerts sensor have nothing more to say.
    before = len(bot.calls)
    loop.deliver()
    loop.defs.resolve_sensor_def("alerts_sensor").evaluate_tick(loop.context())
    assert len(bot.calls) == before
    assert TOKEN not in "".join(c.body for c in bot.calls)


def test_the_same_fault_through_a_webhook_is_two_messages(history, instance, league, webhook):
    loop = loop_for(history, instance)
    days = refresh_days(loop, league, 10)
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    loop.heal_until_quiet()
    opened, closed = webhook()
    assert opened["attachments"][0]["title"] == "🔧 Self-Heal Triggered: Phase 2"
    assert closed["attachments"][0]["title"] == "✅ Self-Heal Healed: Phase 2"
    text = closed["attachments"][0]["fallback"]
    assert f"✅ refreshed Phase 4 {span_text(days)}" in text
    assert "Status: ✅ Healed on attempt 1" in text


def outage_loop(history, instance, league, monkeypatch):
    monkeypatch.setenv("SELFHEAL_LEAGUE_OUTAGES", f"bdl_player_boxscores@{GAME_DAY}")
    loop = loop_for(history, instance)
    days = refresh_days(loop, league, 3)
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    runs = loop.heal_until_quiet()
    assert [r.outcome for r in runs] == ["failed", "failed", "failed"]
    return loop, days


def test_an_outage_is_three_attempt_replies_and_one_page_naming_what_it_holds(
    history, instance, league, monkeypatch, bot
):
    _, days = outage_loop(history, instance, league, monkeypatch)
    parent, page = bot.top_level
    replies = bot.replies(parent.ts)
    assert [r.text.splitlines()[0] for r in replies] == [
        "❌ Attempt 1 of 3 did not heal everything; retrying (2 attempt(s) left)",
        "❌ Attempt 2 of 3 did not heal everything; retrying (1 attempt(s) left)",
        "❌ Attempt 3 of 3 did not heal everything; no attempts left",
    ]
    for r in replies:  # the refresh that waited is a line, not a message
        lines = r.text.splitlines()
        assert any(line.startswith(f"❌ bdl_player_boxscores {GAME_DAY}: ") for line in lines)
        assert "SourceOutage" in r.text
        assert f"⏭️ Phase 4 refresh {span_text(days)}: not run: the heal it waited for" in r.text
    assert page.thread_ts is None and page.title == (
        f"🚨 Self-Heal Gave Up: bdl_player_boxscores {GAME_DAY} — needs a person"
    )
    said = fields(page)
    assert said["Owner"] == "team:data-ingestion" and said["Attempts made"] == "3"
    held = said["Stays broken until fixed"].splitlines()
    assert held[0].startswith(f"• bdl_player_boxscores {GAME_DAY}, last error: SourceOutage")
    for t in execution_order(in_phase(4)):
        assert f"• held (reads it, not refreshed): {t.name} {span_text(days)}" in held
    assert fields(bot.shown(parent.ts))["Status"].startswith("🚨 Gave up after 3 attempt(s)")
    assert bot.shown(parent.ts).color == "#8B0000"


def test_an_outage_through_a_webhook_is_an_opening_and_a_closing_page(
    history, instance, league, monkeypatch, webhook
):
    outage_loop(history, instance, league, monkeypatch)
    opened, closed = webhook()
    assert opened["attachments"][0]["title"] == "🔧 Self-Heal Triggered: Phase 2"
    page = closed["attachments"][0]
    assert (
        page["title"] == f"🚨 Self-Heal Gave Up: bdl_player_boxscores {GAME_DAY} — needs a person"
    )
    text = page["fallback"]
    assert "Owner: team:data-ingestion" in text and "held (reads it, not refreshed)" in text
    assert text.count("did not heal everything") == 3  # the three attempts, one line each


def test_a_target_superseded_before_its_first_attempt_sends_nothing(history, instance, league, bot):
    loop = loop_for(history, instance)
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()  # the failure is recorded
    loop.warehouse.replace_partition(BOX, GAME_DAY, league.feed(BOX.feed, GAME_DAY))  # by hand
    assert loop.heal_until_quiet() == []
    assert bot.calls == [] and loop.warehouse.history() == []


def test_a_deleted_parent_is_replaced_by_a_new_one_that_takes_the_thread(
    history, instance, league, bot
):
    loop = loop_for(history, instance)
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    data = loop.tick()  # the heal is requested: its incident's message is posted
    [first] = bot.top_level
    bot.deleted.add(first.ts)  # someone deletes it
    for request in data.run_requests:
        loop.verify(loop.execute(request).run_id)
    loop.heal_until_quiet()
    first_, again = bot.top_level
    assert first_ is first and again.title == first.title
    [reply] = bot.replies(again.ts)
    assert reply.text.startswith("✅ Attempt 1 healed everything")
    assert fields(bot.shown(again.ts))["Status"].startswith("✅ Healed on attempt 1")


def test_pages_mode_sends_only_the_page_and_a_digest_the_next_day(
    history, instance, league, monkeypatch, webhook
):
    monkeypatch.setenv("SELFHEAL_ALERTS", "pages")
    loop = loop_for(history, instance)
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    loop.heal_until_quiet()
    assert webhook() == []  # healed without a person: nothing today
    notifier = loop.resources["alerts"].notifier(loop.warehouse)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert notifier.deliver(now=tomorrow) == [
        f"digest:{datetime.now(UTC).astimezone(EASTERN).date()}"
    ]
    assert notifier.deliver(now=tomorrow) == []  # once
    [digest] = webhook()
    lines = digest["text"].splitlines()
    assert "1 incident(s) healed without a person (1 on attempt 1)" in lines[0]
    assert lines[1] == f"✅ bdl_player_boxscores {GAME_DAY} missing: healed on attempt 1"


def test_pages_mode_pages_an_outage_once(history, instance, league, monkeypatch, bot):
    monkeypatch.setenv("SELFHEAL_ALERTS", "pages")
    outage_loop(history, instance, league, monkeypatch)
    [page] = bot.calls
    assert page.title.startswith("🚨 Self-Heal Gave Up: bdl_player_boxscores")


def test_slack_answering_500_delays_no_heal_and_each_message_is_tried_once(
    history, instance, httpserver, monkeypatch, caplog
):
    httpserver.expect_request("/api/chat.postMessage").respond_with_data("oops", status=500)
    httpserver.expect_request("/api/chat.update").respond_with_data("oops", status=500)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_CHANNEL", "#nba-alerts")
    monkeypatch.setenv("SELFHEAL_SLACK_API_URL", httpserver.url_for("/api/"))
    loop = loop_for(history, instance)
    loop.resources["alerts"] = loop.resources["alerts"].model_copy(update={"timeout_seconds": 1.0})
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    with caplog.at_level(logging.WARNING, logger="selfheal.alerts"):
        runs = loop.heal_until_quiet()
    assert [r.outcome for r in runs] == ["healed"]
    tried = len(httpserver.log)
    warnings = [r for r in caplog.records if r.name == "selfheal.alerts"]
    assert tried == 3 * len(warnings) and warnings  # each message: 3 attempts, one warning
    notes = [n for r in loop.warehouse.history() for n in r.alerts]
    assert notes and not any(n["delivered"] for n in notes)
    loop.deliver()
    assert len(httpserver.log) == tried  # nothing tried twice
    assert TOKEN not in caplog.text


def test_bot_token_posts_through_the_web_api_with_the_bearer_token(httpserver):
    httpserver.expect_oneshot_request("/api/chat.postMessage", method="POST").respond_with_json(
        {"ok": True, "channel": "C1", "ts": "1.0"}
    )
    resource = AlertsResource(
        bot_token=TOKEN, channel="#nba-alerts", slack_api_url=httpserver.url_for("/api/")
    )
    assert resource.sink().send(message()) is True
    [(request, _)] = httpserver.log
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    sent = request.get_json(silent=True) or request.form.to_dict()
    assert sent["channel"] == "#nba-alerts"
    attachments = sent["attachments"]
    attachments = json.loads(attachments) if isinstance(attachments, str) else attachments
    assert attachments[0]["color"] == "#FFA500"


def test_slack_down_three_times_is_one_warning_and_no_exception(httpserver, caplog):
    httpserver.expect_request("/hook").respond_with_data("down", status=500)
    sink = alerts.WebhookSink(url=httpserver.url_for("/hook"), delivery=fast())
    with caplog.at_level(logging.WARNING, logger="selfheal.alerts"):
        assert sink.send(message()) is False
    assert len(httpserver.log) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 500" in warnings[0].getMessage()
    assert httpserver.url_for("/hook") not in caplog.text


def test_rate_limit_retry_after_is_honoured_within_the_bound(httpserver):
    httpserver.expect_ordered_request("/hook").respond_with_response(
        Response("slow down", status=429, headers={"Retry-After": "1"})
    )
    httpserver.expect_ordered_request("/hook").respond_with_data("ok")
    waits: list[float] = []
    sink = alerts.WebhookSink(url=httpserver.url_for("/hook"), delivery=fast(sleep=waits.append))
    assert sink.send(message()) is True
    assert waits == [1.0] and len(httpserver.log) == 2


def test_a_retry_after_beyond_the_cap_is_not_waited_for(httpserver):
    httpserver.expect_request("/hook").respond_with_response(
        Response("slow down", status=429, headers={"Retry-After": "600"})
    )
    waits: list[float] = []
    sink = alerts.WebhookSink(
        url=httpserver.url_for("/hook"),
        delivery=fast(max_retry_after_seconds=0.2, sleep=waits.append),
    )
    assert sink.send(message()) is False
    assert waits == [0.2, 0.2] and len(httpserver.log) == 3


def test_a_rejected_payload_is_not_retried(httpserver, caplog):
    httpserver.expect_request("/hook").respond_with_data("invalid_payload", status=400)
    sink = alerts.WebhookSink(url=httpserver.url_for("/hook"), delivery=fast())
    with caplog.at_level(logging.WARNING, logger="selfheal.alerts"):
        assert sink.send(message()) is False
    assert len(httpserver.log) == 1 and "HTTP 400 invalid_payload" in caplog.text


def test_an_unreachable_slack_is_bounded_and_never_raises(caplog):
    sink = alerts.WebhookSink(url="http://127.0.0.1:9/hook", delivery=fast(timeout_seconds=1))
    with caplog.at_level(logging.WARNING, logger="selfheal.alerts"):
        assert sink.send(message()) is False
    assert "no response" in caplog.text and "127.0.0.1:9" not in caplog.text


def test_the_token_never_appears_in_logs_even_when_slack_fails(httpserver, caplog, capsys):
    httpserver.expect_request("/api/chat.postMessage").respond_with_json(
        {"ok": False, "error": "invalid_auth"}, status=401
    )
    resource = AlertsResource(
        bot_token=TOKEN, channel="#nba-alerts", slack_api_url=httpserver.url_for("/api/")
    )
    with caplog.at_level(logging.DEBUG):
        assert resource.sink().send(message()) is False
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert TOKEN not in text
    assert "HTTP 401" in caplog.text


def test_the_log_sink_is_the_default_and_says_the_whole_message(caplog):
    with caplog.at_level(logging.INFO, logger="selfheal.alerts"):
        assert AlertsResource().sink().send(message()) is True
    assert (
        "🔧 Self-Heal Triggered: Phase 2" in caplog.text and "• odds_api_game_lines" in caplog.text
    )
