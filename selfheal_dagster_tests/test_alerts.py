"""Alerts against a real HTTP server on 127.0.0.1: layout, bot token, outages, secrets."""

import json
import logging
from datetime import UTC, date, datetime

import pytest
from werkzeug import Response

from selfheal_dagster.defs.resources import AlertsResource
from selfheal_dagster.lib import alerts
from selfheal_dagster.lib.history import HealingResult, HealRecord, Outcome

TOKEN = "xoxb-0000-secret-token-do-not-log"
CID = "a1b2c3d4-1111-2222-3333-444455556666"


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
    )
    return HealRecord(**{**base.__dict__, **changes})


def fast(**kw) -> alerts.Delivery:
    return alerts.Delivery(backoff_seconds=0.05, **kw)


def test_webhook_payload_has_the_familiar_layout(httpserver):
    httpserver.expect_oneshot_request("/hook", method="POST").respond_with_data("ok")
    sink = alerts.WebhookSink(url=httpserver.url_for("/hook"), delivery=fast())
    assert sink.send(alerts.triggered(record())) is True
    [(request, _)] = httpserver.log
    body = json.loads(request.get_data())
    [attachment] = body["attachments"]
    assert attachment["color"] == "#FFA500"
    assert attachment["title"] == "🔧 Self-Heal Triggered: Phase 2"
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields["Date"] == "2026-01-21"
    assert fields["Phase"] == "Phase 2"
    assert fields["Healing Triggered"] == "✅ Yes"
    assert fields["Correlation ID"] == f"`{CID}`"
    assert fields["Missing Components"].splitlines() == [
        "• bdl_player_boxscores",
        "• odds_api_game_lines",
    ]
    assert [f["title"] for f in attachment["fields"]] == [
        "Date",
        "Phase",
        "Healing Triggered",
        "Correlation ID",
        "Missing Components",
    ]


@pytest.mark.parametrize(
    ("changes", "title", "field"),
    [
        (
            {"outcome": Outcome.HEALED, "seconds_to_heal": 95.0, "run_ids": ["r1"]},
            "✅ Self-Heal Healed: Phase 2",
            ("Detected to healed", "95 s"),
        ),
        (
            {
                "outcome": Outcome.FAILED,
                "run_ids": ["r2"],
                "healing_result": HealingResult(True, True, False, "SourceOutage: down"),
            },
            "❌ Self-Heal Failed: Phase 2",
            ("Error", "SourceOutage: down"),
        ),
        (
            {"outcome": Outcome.GAVE_UP, "attempt": 3},
            "🚨 Self-Heal Gave Up: Phase 2 — needs a person",
            ("Attempts made", "3"),
        ),
    ],
)
def test_outcome_messages(changes, title, field):
    message = alerts.outcome(record(**changes), run_link=lambda r: f"http://ui/runs/{r}")
    assert message.title == title
    assert field in message.fields
    if "run_ids" in changes:
        assert ("Run", f"http://ui/runs/{changes['run_ids'][0]}") in message.fields
    needs_a_person = changes["outcome"] in (Outcome.FAILED, Outcome.GAVE_UP)
    assert (("Owner", "team:data-ingestion") in message.fields) == needs_a_person
    phase4 = alerts.outcome(record(**changes, phase="phase4"))
    assert (("Owner", "team:analytics-engineering") in phase4.fields) == needs_a_person


def test_bot_token_posts_through_the_web_api_with_the_bearer_token(httpserver):
    httpserver.expect_oneshot_request("/api/chat.postMessage", method="POST").respond_with_json(
        {"ok": True, "channel": "C1", "ts": "1.0"}
    )
    resource = AlertsResource(
        bot_token=TOKEN, channel="#nba-alerts", slack_api_url=httpserver.url_for("/api/")
    )
    assert resource.sink().send(alerts.triggered(record())) is True
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
        assert sink.send(alerts.triggered(record())) is False
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
    assert sink.send(alerts.triggered(record())) is True
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
    assert sink.send(alerts.triggered(record())) is False
    assert waits == [0.2, 0.2] and len(httpserver.log) == 3


def test_a_rejected_payload_is_not_retried(httpserver, caplog):
    httpserver.expect_request("/hook").respond_with_data("invalid_payload", status=400)
    sink = alerts.WebhookSink(url=httpserver.url_for("/hook"), delivery=fast())
    with caplog.at_level(logging.WARNING, logger="selfheal.alerts"):
        assert sink.send(alerts.triggered(record())) is False
    assert len(httpserver.log) == 1 and "HTTP 400 invalid_payload" in caplog.text


def test_an_unreachable_slack_is_bounded_and_never_raises(caplog):
    sink = alerts.WebhookSink(url="http://127.0.0.1:9/hook", delivery=fast(timeout_seconds=1))
    with caplog.at_level(logging.WARNING, logger="selfheal.alerts"):
        assert sink.send(alerts.triggered(record())) is False
    assert "no response" in caplog.text and "127.0.0.1:9" not in caplog.text


def test_the_token_never_appears_in_logs_even_when_slack_fails(httpserver, caplog, capsys):
    httpserver.expect_request("/api/chat.postMessage").respond_with_json(
        {"ok": False, "error": "invalid_auth"}, status=401
    )
    resource = AlertsResource(
        bot_token=TOKEN, channel="#nba-alerts", slack_api_url=httpserver.url_for("/api/")
    )
    with caplog.at_level(logging.DEBUG):
        assert resource.sink().send(alerts.triggered(record())) is False
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert TOKEN not in text
    assert "HTTP 401" in caplog.text


def test_the_log_sink_is_the_default_and_says_the_whole_message(caplog):
    with caplog.at_level(logging.INFO, logger="selfheal.alerts"):
        assert AlertsResource().sink().send(alerts.triggered(record())) is True
    assert (
        "🔧 Self-Heal Triggered: Phase 2" in caplog.text and "• odds_api_game_lines" in caplog.text
    )
