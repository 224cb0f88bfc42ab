"""The heal sensor and the outcome sensors, with a real Dagster instance and DuckDB file."""

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from enum import Enum

import dagster as dg
import pytest

from selfheal_dagster import runs
from selfheal_dagster.core import heal_state, healing, names
from selfheal_dagster.core.dates import now_utc
from selfheal_dagster.core.history import Outcome
from selfheal_dagster.defs.heal import heal_tick
from selfheal_dagster.instance.heal_loop import OUTCOME_TAG, REASON_TAG, verify
from selfheal_dagster.tables import BY_NAME, execution_order, in_phase
from selfheal_dagster_tests.support import GAME_DAY, SweepingLoop, load_phase2

BOX = BY_NAME["bdl_player_boxscores"]
CACHE = BY_NAME["player_daily_cache"]
NOW = SweepingLoop.NOW  # sweep "today"; Phase 2 window GAME_DAY±1


Loop = SweepingLoop


@pytest.fixture
def loop(history, instance, defs):
    return Loop(defs, instance, history)


def test_first_tick_starts_from_the_newest_check_record(loop):
    state = heal_state.State.from_json(loop.cursor)
    assert state.watermark == 0


def test_one_failed_evaluation_gives_one_run_request_with_selection_partition_and_tags(loop):
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    result = loop.tick()
    [request] = result.run_requests
    assert request.job_name == "heal_job"
    assert request.partition_key == GAME_DAY.isoformat()
    assert [k.to_user_string() for k in request.asset_selection] == [BOX.key]
    tags = request.tags
    assert tags[names.ATTEMPT] == "1" and tags[names.PHASE] == "2"
    assert tags[names.TARGET_DATE] == GAME_DAY.isoformat()
    assert len(tags[names.CORRELATION_ID]) == 36 and tags[names.FAILED] == BOX.name
    [record] = loop.warehouse.history(day=GAME_DAY)
    assert record.outcome is Outcome.TRIGGERED and record.missing_components == [BOX.name]
    assert record.correlation_id == tags[names.CORRELATION_ID]


def test_the_same_tick_evaluated_again_launches_no_duplicate(loop):
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    before = loop.cursor
    first = loop.tick()
    again = loop.sensor.evaluate_tick(loop.context(before))  # same cursor: the re-run tick
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    assert len(loop.warehouse.history(day=GAME_DAY)) == 1  # no second history record
    assert loop.tick().run_requests == []  # the next tick, with the new cursor: nothing new
    # Once the daemon has launched it, the run key is taken: Dagster drops the duplicate.
    loop.run(first.run_requests[0])
    runs_with_key = loop.instance.get_runs(
        dg.RunsFilter(tags={"dagster/run_key": first.run_requests[0].run_key})
    )
    assert len(runs_with_key) == 1


def test_a_target_with_a_queued_heal_is_skipped_with_a_reason(loop):
    job = loop.defs.resolve_job_def("heal_job")
    # A queued run must say which code location will execute it, as the daemon records it.
    from dagster._core.remote_origin import (
        InProcessCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=InProcessCodeLocationOrigin(
                loadable_target_origin=LoadableTargetOrigin(
                    module_name="selfheal_dagster.definitions"
                )
            ),
            repository_name="__repository__",
        ),
        job_name="heal_job",
    )
    queued = loop.instance.create_run_for_job(
        job,
        asset_selection=frozenset({dg.AssetKey(BOX.key_path)}),
        tags={names.TARGET_DATE: GAME_DAY.isoformat(), "dagster/partition": GAME_DAY.isoformat()},
        remote_job_origin=origin,
    )
    # What the queued run coordinator records when it accepts a run.
    loop.instance.handle_run_event(
        queued.run_id,
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_ENQUEUED.value, job_name="heal_job"
        ),
    )
    assert loop.instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.QUEUED
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    result = loop.tick()
    assert result.run_requests == []
    assert "queued or running" in result.skip_message and queued.run_id in result.skip_message


def test_a_fourth_failure_the_same_day_gives_up_once_and_launches_nothing(loop, monkeypatch):
    monkeypatch.setenv("SELFHEAL_LEAGUE_OUTAGES", f"bdl_player_boxscores@{GAME_DAY}")
    from selfheal_dagster.definitions import defs as load

    loop.defs = load()
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    policy = heal_state.Policy(max_attempts=3, backoff_seconds=0)
    launched, said, run_ids = [], [], []
    for _ in range(6):
        loop.sweep()
        result = heal_tick(loop.context(), loop.warehouse, policy)
        loop.cursor = result.cursor
        said.append(result.skip_reason.skip_message if result.skip_reason else "launched")
        for request in result.run_requests:
            outcome = loop.run(request)
            assert not outcome.success  # the source is down
            verify(loop.instance, loop.instance.get_run_by_id(outcome.run_id), loop.warehouse)
            launched.append(request.tags[names.ATTEMPT])
            run_ids.append(outcome.run_id)
    assert launched == ["1", "2", "3"], said
    # Each tick's reason is one short line.
    assert all(len(line) <= 120 and "\n" not in line for line in said), said
    # The outcome is on each run: the UI's run list filters the failed heals.
    tags = [loop.instance.get_run_by_id(r).tags for r in run_ids]
    assert [t[OUTCOME_TAG] for t in tags] == ["failed", "failed", "gave_up"]
    assert all("SourceOutage" in t[REASON_TAG] and len(t[REASON_TAG]) <= 120 for t in tags)
    failed = loop.instance.get_runs(dg.RunsFilter(tags={OUTCOME_TAG: "failed"}))
    assert sorted(r.run_id for r in failed) == sorted(run_ids[:2])
    records = loop.warehouse.history(day=GAME_DAY)
    # One incident across its attempts: a record per attempt, the give-up, its end.
    assert sorted(r.outcome for r in records) == [
        Outcome.CLOSED,
        *[Outcome.FAILED] * 3,
        Outcome.GAVE_UP,
    ]
    assert len({r.correlation_id for r in records}) == 1
    assert sorted(r.attempt for r in records if r.outcome is Outcome.FAILED) == [1, 2, 3]
    [gave_up] = [r for r in records if r.outcome is Outcome.GAVE_UP]
    assert gave_up.attempt == 3 and "needs a person" in gave_up.healing_result.reason
    assert all(
        "SourceOutage" in r.healing_result.reason for r in records if r.outcome is Outcome.FAILED
    )

    # The next day the target may be healed again.
    loop.sweep()
    tomorrow = now_utc() + timedelta(days=1)
    result = heal_tick(loop.context(), loop.warehouse, policy, now=tomorrow)
    [request] = result.run_requests
    assert request.tags[names.ATTEMPT] == "1"


def test_back_off_grows_between_attempts(loop, monkeypatch):
    monkeypatch.setenv("SELFHEAL_LEAGUE_OUTAGES", f"bdl_player_boxscores@{GAME_DAY}")
    from selfheal_dagster.definitions import defs as load

    loop.defs = load()
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    policy = heal_state.Policy(max_attempts=3, backoff_seconds=600)
    loop.sweep()
    result = heal_tick(loop.context(), loop.warehouse, policy)
    loop.cursor = result.cursor
    ended = loop.run(result.run_requests[0])
    loop.sweep()
    result = heal_tick(loop.context(), loop.warehouse, policy)
    loop.cursor = result.cursor
    assert (
        result.run_requests == []
        and "backing off after attempt 1" in result.skip_reason.skip_message
    )
    # 10 minutes after the first attempt ended, attempt 2 goes; then 20 minutes.
    end = loop.instance.get_run_record_by_id(ended.run_id).end_time
    later = now_utc().fromtimestamp(end, now_utc().tzinfo) + timedelta(minutes=11)
    loop.sweep()
    result = heal_tick(loop.context(), loop.warehouse, policy, now=later)
    loop.cursor = result.cursor
    [request] = result.run_requests
    assert request.tags[names.ATTEMPT] == "2"
    assert policy.next_allowed(2, later) == later + timedelta(minutes=20)


def test_box_score_heal_then_one_ranged_run_for_the_dates_that_read_it(loop, league):
    # Phase 4 exists for the two days after GAME_DAY: both read GAME_DAY's box scores.
    nxt, last = GAME_DAY + timedelta(days=1), GAME_DAY + timedelta(days=2)
    load_phase2(loop.warehouse, league, last, last)
    for t in execution_order(in_phase(4)):
        loop.warehouse.run_processor(t, [nxt, last])
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    first = loop.tick()
    [box_run] = first.run_requests
    assert box_run.partition_key == GAME_DAY.isoformat()
    waiting = loop.tick()
    assert waiting.run_requests == []  # Phase 4 waits for the box-score heal
    outcome = loop.run(box_run)
    assert outcome.success
    healed, reason, _ = verify(
        loop.instance, loop.instance.get_run_by_id(outcome.run_id), loop.warehouse
    )
    assert healed is Outcome.HEALED, reason
    [phase4_run] = loop.tick().run_requests  # two dates, one run
    assert phase4_run.partition_key is None
    assert phase4_run.tags["dagster/asset_partition_range_start"] == nxt.isoformat()
    assert phase4_run.tags["dagster/asset_partition_range_end"] == last.isoformat()
    assert [k.to_user_string() for k in phase4_run.asset_selection] == [
        t.key for t in execution_order(in_phase(4))
    ]
    cid = box_run.tags[names.CORRELATION_ID]
    assert phase4_run.tags[names.CORRELATION_ID] == cid
    assert phase4_run.tags[names.PHASE] == "4"
    before = {d: loop.warehouse.partition_stats(CACHE, d, d)[d].loaded_at for d in (nxt, last)}
    outcome = loop.run(phase4_run)
    assert outcome.success
    verify(loop.instance, loop.instance.get_run_by_id(outcome.run_id), loop.warehouse)
    after = {d: loop.warehouse.partition_stats(CACHE, d, d)[d].loaded_at for d in (nxt, last)}
    assert all(after[d] > before[d] for d in (nxt, last))  # both dates recomputed
    outcomes = {
        (r.phase, r.target_date): r.outcome for r in loop.warehouse.history(correlation_id=cid)
    }
    assert outcomes == {
        ("phase2", GAME_DAY): Outcome.HEALED,
        ("phase4", nxt): Outcome.HEALED,
        ("phase4", last): Outcome.HEALED,
    }
    assert loop.tick().run_requests == [] and not loop.pending()
    # Both runs say so on themselves, and sit under heal_job in the code location (the
    # filter the UI's job page uses).
    in_location = {".dagster/repository": "__repository__@selfheal_dagster"}
    healed_runs = loop.instance.get_runs(
        dg.RunsFilter(job_name="heal_job", tags={**in_location, OUTCOME_TAG: "healed"})
    )
    assert len(healed_runs) == 2
    assert {r.remote_job_origin.job_name for r in healed_runs} == {"heal_job"}


def test_a_late_warning_never_heals(loop):
    loop.sweep()  # everything in the window is present but was loaded after its deadline
    result = loop.tick()
    assert result.run_requests == [] and result.skip_message == "no new failed checks"


def test_a_healed_target_that_breaks_again_starts_again_at_attempt_one(loop):
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    [first] = loop.tick().run_requests
    outcome = loop.run(first)
    assert loop.verify(outcome.run_id)[0] == "healed"
    loop.sweep()  # records the passing result: the data changed
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    data = loop.tick()
    assert len(data.run_requests) == 1, data.skip_message
    [second] = data.run_requests
    assert second.tags[names.ATTEMPT] == "1"
    assert second.run_key != first.run_key
    assert second.tags[names.CORRELATION_ID] != first.tags[names.CORRELATION_ID]


def test_a_sweep_result_read_before_the_heal_wrote_is_no_new_failure(loop, monkeypatch):
    """The race seen under the daemon: a sweep reads the gap, the heal writes, then the sweep
    records its (now outdated) failure. It must not heal the partition a second time."""
    from selfheal_dagster.adapters.warehouse import read_window
    from selfheal_dagster.defs import sweep

    loop.warehouse.punch_gap(BOX, GAME_DAY)
    read_before = now_utc()
    stale_window = read_window(
        loop.warehouse, GAME_DAY - timedelta(days=60), GAME_DAY + timedelta(days=1)
    )
    loop.sweep()
    [first] = loop.tick().run_requests
    assert loop.run(first).success
    # The late sweep: its read (taken before the heal wrote) is recorded only now.
    with monkeypatch.context() as late:
        late.setattr(sweep, "read_window", lambda *a, **k: stale_window)
        late.setattr(sweep, "now_utc", lambda: read_before)
        found = loop.sweep()
    assert "bdl_player_boxscores" in found["failing"]  # the outdated failure was recorded
    again = loop.tick()
    assert again.run_requests == [], again.skip_message
    assert len(loop.instance.get_runs(dg.RunsFilter(job_name="heal_job"))) == 1


def test_a_backfill_claims_its_whole_range_until_its_last_run(history, instance, defs):
    from selfheal_dagster.instance.heal_loop import busy_partitions

    job = defs.resolve_job_def("daily_job")
    span = f"{GAME_DAY}..{GAME_DAY + timedelta(days=2)}"

    def step(day, k):
        tags = {names.BACKFILL: span, names.BACKFILL_STEP: f"{k}/3"}
        return job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            asset_selection=[dg.AssetKey(BOX.key_path)],
            tags=tags,
            run_config=runs.QUIET,
        )

    step(GAME_DAY, 1)  # between its first and second run: every date of the range is claimed
    busy = busy_partitions(instance, now_utc())
    assert {d for a, d in busy if a == BOX.key} == {GAME_DAY + timedelta(days=i) for i in range(3)}
    assert not any(a != BOX.key for a, _ in busy)
    step(GAME_DAY + timedelta(days=1), 2)
    step(GAME_DAY + timedelta(days=2), 3)  # its last run ended: nothing is claimed any more
    assert busy_partitions(instance, now_utc()) == {}


def test_runs_that_write_no_table_claim_nothing(instance, defs):
    """A person's re-check of a date (a partitioned sweep run) or the heal figures of a day
    in flight never hold up a heal of that date."""
    from selfheal_dagster.instance.heal_loop import busy_partitions

    day = {"dagster/partition": GAME_DAY.isoformat()}
    instance.create_run_for_job(
        defs.resolve_job_def("sweep_job"), status=dg.DagsterRunStatus.STARTED, tags=day
    )
    instance.create_run_for_job(
        defs.resolve_job_def("heal_metrics_job"), status=dg.DagsterRunStatus.STARTED, tags=day
    )
    assert busy_partitions(instance, now_utc()) == {}
    heal = instance.create_run_for_job(
        defs.resolve_job_def("heal_job"), status=dg.DagsterRunStatus.STARTED, tags=day
    )
    assert busy_partitions(instance, now_utc())[(BOX.key, GAME_DAY)] == heal.run_id


def test_a_heal_run_that_finds_an_input_missing_is_held_not_failed(loop, league):
    from selfheal_dagster.instance.heal_loop import judge

    nxt = GAME_DAY + timedelta(days=1)
    for t in execution_order(in_phase(4)):
        loop.warehouse.run_processor(t, [nxt])
    read = next(
        d for d in (GAME_DAY - timedelta(days=i) for i in range(1, 9)) if league.games_on(d)
    )
    loop.warehouse.punch_gap(BOX, read)
    cache = "nba_predictions/player_daily_cache"
    request = dg.RunRequest(
        run_key="held-test",
        job_name="heal_job",
        partition_key=nxt.isoformat(),
        asset_selection=[dg.AssetKey.from_user_string(cache)],
        tags={
            names.CORRELATION_ID: "c0ffee00-0000-4000-8000-000000000001",
            names.TARGET_DATE: nxt.isoformat(),
        },
    )
    result = loop.run(request)
    assert not result.success
    outcome, reason = judge(loop.instance, loop.instance.get_run_by_id(result.run_id))
    assert outcome is Outcome.SKIPPED and reason.startswith("held: ")
    assert f"nba_raw/bdl_player_boxscores: 1 game day missing, {read}" in reason


def test_a_run_whose_raw_step_hit_an_outage_still_records_its_healed_phase4(loop, monkeypatch):
    from selfheal_dagster.core.history import HealingResult, HealRecord
    from selfheal_dagster.definitions import defs as load

    monkeypatch.setenv("SELFHEAL_LEAGUE_OUTAGES", f"odds_api_game_lines@{GAME_DAY}")
    loop.defs = load()
    cid = "c0ffee00-0000-4000-8000-000000000002"
    assets = {
        "phase2": "nba_raw/odds_api_game_lines",
        "phase4": "nba_predictions/player_daily_cache",
    }
    for phase, asset in assets.items():
        loop.warehouse.insert_history(
            HealRecord(
                phase=phase,
                target_date=GAME_DAY,
                missing_components=[asset.split("/")[1]],
                healing_result=HealingResult(triggered=True, reason="test"),
                correlation_id=cid,
                timestamp=now_utc(),
                assets=[asset],
            )
        )
    request = dg.RunRequest(
        run_key="mixed-test",
        job_name="heal_job",
        partition_key=GAME_DAY.isoformat(),
        asset_selection=[dg.AssetKey.from_user_string(a) for a in assets.values()],
        tags={names.CORRELATION_ID: cid, names.TARGET_DATE: GAME_DAY.isoformat()},
    )
    result = loop.run(request)
    assert not result.success  # the odds step hit the outage
    verify(loop.instance, loop.instance.get_run_by_id(result.run_id), loop.warehouse)
    outcomes = {r.phase: r.outcome for r in loop.warehouse.history(day=GAME_DAY)}
    assert outcomes == {"phase2": Outcome.FAILED, "phase4": Outcome.HEALED}


def _callables(value, path="world") -> list[str]:
    """Every callable reachable from ``value`` through dataclass fields and containers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [
            found
            for f in dataclasses.fields(value)
            for found in _callables(getattr(value, f.name), f"{path}.{f.name}")
        ]
    if isinstance(value, Mapping):
        return [
            found
            for k, v in value.items()
            for found in [*_callables(k, f"{path}[key]"), *_callables(v, f"{path}[{k!r}]")]
        ]
    if isinstance(value, list | tuple | set | frozenset):
        return [found for i, v in enumerate(value) for found in _callables(v, f"{path}[{i}]")]
    if callable(value) and not isinstance(value, type | Enum):
        return [path]
    return []


def test_decide_is_given_data_and_no_callable(loop, monkeypatch):
    """What a real tick hands ``decide``: a world and an observation of frozen values,
    nothing that could call back into the warehouse or the instance."""
    given = []
    real = healing.decide

    def spy(state, observation, world, now, policy):
        given.append((state, observation, world))
        return real(state, observation, world, now, policy)

    monkeypatch.setattr(healing, "decide", spy)
    loop.warehouse.punch_gap(BOX, GAME_DAY)
    loop.sweep()
    assert loop.tick().run_requests
    state, observation, world = given[-1]
    assert world.existing and world.broken and world.graph.edges
    for value, name in ((state, "state"), (observation, "observation"), (world, "world")):
        assert _callables(value, name) == []
    # and a planted callable is found
    assert _callables(dataclasses.replace(world, phases={"x": lambda: 1})) == ["world.phases['x']"]
