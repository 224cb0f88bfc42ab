"""The platform services client against a real HTTP server on 127.0.0.1."""

import logging
import socket
import threading
import time

import pytest
from werkzeug import Response

from selfheal_dagster.adapters.services import ServiceClient, ServiceError
from selfheal_dagster.core.job_context import JobContext
from selfheal_dagster.defs.resources import Phase4Resource, ScraperServiceResource, ServiceConfig
from selfheal_dagster.tables import BY_NAME
from selfheal_dagster_tests.support import GAME_DAY, bound

BOX = BY_NAME["bdl_player_boxscores"]
TOKEN = "eyJ-google-id-token-never-logged"
CID = "a1b2c3d4-0000-4000-8000-000000000000"


def client(httpserver, **kw):
    return ServiceClient(
        name="scraper service",
        base_url=httpserver.url_for("/"),
        backoff_seconds=0.05,
        **kw,
    )


def test_success_posts_the_date_and_returns_the_answer(httpserver):
    httpserver.expect_oneshot_request(
        "/bdl_player_boxscores", method="POST", query_string={"game_date": "2026-01-20"}
    ).respond_with_json({"status": "ok", "rows": 185})
    assert client(httpserver).post("bdl_player_boxscores", {"game_date": "2026-01-20"}) == {
        "status": "ok",
        "rows": 185,
    }


def test_a_503_then_success_is_retried(httpserver, caplog):
    httpserver.expect_ordered_request("/nbac_schedule").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/nbac_schedule").respond_with_json({"rows": 8})
    with caplog.at_level(logging.WARNING, logger="selfheal.services"):
        assert client(httpserver).post("nbac_schedule", {"game_date": "2026-01-20"}) == {"rows": 8}
    assert [r.path for r, _ in httpserver.log] == ["/nbac_schedule"] * 2
    assert "HTTP 503" in caplog.text


def test_a_400_fails_fast_with_the_body_in_the_error(httpserver):
    httpserver.expect_request("/odds_api_game_lines").respond_with_data(
        "unknown game_date 2026-13-45", status=400
    )
    with pytest.raises(ServiceError, match="HTTP 400 unknown game_date 2026-13-45") as info:
        client(httpserver).post("odds_api_game_lines", {"game_date": "2026-13-45"})
    assert [r.path for r, _ in httpserver.log] == ["/odds_api_game_lines"]
    assert "\n" not in str(info.value)


def test_after_a_read_timeout_the_call_is_not_sent_again(httpserver):
    """The service may still be loading: a second POST would run the work twice. One POST
    per attempt; the heal loop's next attempt (a new run) calls again."""

    def slow(request):
        time.sleep(1.5)
        return Response("late", status=200)

    httpserver.expect_request("/bdl_player_boxscores").respond_with_handler(slow)
    with pytest.raises(ServiceError, match=r"no answer within 0.3s; not sent again") as info:
        client(httpserver, timeout_seconds=0.3, attempts=3).post(
            "bdl_player_boxscores", {"game_date": "2026-01-20"}
        )
    assert "Idempotency-Key" in str(info.value) and "\n" not in str(info.value)
    # The server is still sleeping on the call the client gave up on: let it finish here, or
    # it lands in the next test's request log (a failure that depended on test order).
    end = time.monotonic() + bound(30)
    while not httpserver.log and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(0.5)
    assert [r.path for r, _ in httpserver.log] == ["/bdl_player_boxscores"]


def test_retries_of_one_call_carry_one_key_and_the_heal_they_serve(httpserver):
    for _ in range(2):
        httpserver.expect_ordered_request("/nbac_schedule").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/nbac_schedule").respond_with_json({"rows": 8})
    job = JobContext("asset", asset="nbac_schedule", run_id="run-1", correlation_id=CID)
    assert client(httpserver).post("nbac_schedule", {"game_date": "2026-01-20"}, job) == {"rows": 8}
    calls = [request for request, _ in httpserver.log]
    keys = {r.headers["Idempotency-Key"] for r in calls}
    assert len(calls) == 3 and len(keys) == 1
    assert {r.headers["X-Correlation-ID"] for r in calls} == {CID}
    assert {r.headers["X-Dagster-Run-ID"] for r in calls} == {"run-1"}
    # The next attempt is a new run: a new key (the service may do the work again).
    again = JobContext("asset", asset="nbac_schedule", run_id="run-2", correlation_id=CID)
    assert again.idempotency_key("x") != job.idempotency_key("x")
    assert job.idempotency_key("x") == job.idempotency_key("x")


def test_retry_after_is_honoured_and_bounded(httpserver):
    httpserver.expect_ordered_request("/x").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7"}
    )
    httpserver.expect_ordered_request("/x").respond_with_data(
        "maintenance", status=503, headers={"Retry-After": "86400"}
    )
    httpserver.expect_ordered_request("/x").respond_with_json({"ok": True})
    slept: list[float] = []
    found = client(httpserver, sleep=slept.append, max_retry_after_seconds=60).post("x", {})
    assert found == {"ok": True}
    assert slept == [7.0, 60.0]  # as asked; then capped, not a day


def test_a_refused_connection_is_retried_it_never_reached_the_service():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    slept: list[float] = []
    service = ServiceClient(
        name="scraper service", base_url=f"http://127.0.0.1:{port}/", sleep=slept.append
    )
    with pytest.raises(ServiceError, match="after 3 attempts: connection failed"):
        service.post("x", {})
    assert len(slept) == 2


def test_a_connection_lost_mid_call_is_not_sent_again():
    """The request reached the service, then the connection dropped: it may be running."""
    received: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            received.append(conn.recv(65536))
            conn.close()  # no answer

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    try:
        service = ServiceClient(name="scraper service", base_url=f"http://127.0.0.1:{port}/")
        with pytest.raises(ServiceError, match="connection lost mid-call; not sent again"):
            service.post("x", {"game_date": "2026-01-20"})
    finally:
        listener.close()
    assert len(received) == 1


def test_an_id_token_is_sent_but_never_shown(httpserver, caplog):
    httpserver.expect_request("/x").respond_with_data("nope", status=500)
    with caplog.at_level(logging.DEBUG), pytest.raises(ServiceError) as info:
        client(httpserver, attempts=2, id_token=lambda audience: TOKEN).post("x", {})
    calls = [request for request, _ in httpserver.log if request.path == "/x"]
    assert len(calls) == 2
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in calls)
    assert TOKEN not in str(info.value) and TOKEN not in caplog.text


def test_scraper_resource_reads_back_what_the_service_loaded(httpserver, warehouse, league):
    def scrape(request):
        day = request.args["game_date"]
        assert day == GAME_DAY.isoformat()
        warehouse.replace_partition(BOX, GAME_DAY, league.feed(BOX.name, GAME_DAY))
        return Response('{"status": "loaded"}', status=200, content_type="application/json")

    httpserver.expect_request("/bdl_player_boxscores", method="POST").respond_with_handler(scrape)
    source = ScraperServiceResource(
        service=ServiceConfig(base_url=httpserver.url_for("/"), id_token=False)
    )
    written = source.load(BOX, GAME_DAY, warehouse)
    assert written.rows == len(league.feed(BOX.name, GAME_DAY)) > 0
    assert source.scheduled_games(GAME_DAY) is None  # the service does not know the calendar


def test_phase4_routes_each_processor_to_the_service_or_the_warehouse(httpserver, history):
    cache = BY_NAME["player_daily_cache"]
    team = BY_NAME["team_defense_zone_analysis"]
    httpserver.expect_request(
        "/player_daily_cache", query_string={"game_date": GAME_DAY.isoformat()}
    ).respond_with_json({"status": "ok"})
    phase4 = Phase4Resource(
        service=ServiceConfig(base_url=httpserver.url_for("/"), id_token=False),
        via_service=["player_daily_cache"],
    )
    written, via = phase4.run(cache, [GAME_DAY], history)
    assert via == "phase4 service" and written.rows == 0  # the stub service wrote nothing
    written, via = phase4.run(team, [GAME_DAY], history)
    assert via == "duckdb SQL" and written.rows > 0
    assert [r.path for r, _ in httpserver.log] == ["/player_daily_cache"]
