"""The heal loop's pure decision: one test per guard, and random sequences of failures, run
outcomes and passes checked against the loop's promises."""

import dataclasses
import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from selfheal_dagster.core import heal_state, healing, names, planner
from selfheal_dagster.core.checks import CHECKS
from selfheal_dagster.core.heal_state import Observation, RunState, RunStatus, TargetState
from selfheal_dagster.core.history import Outcome

RAW, PRE, LATE = "raw/a", "pre/b", "pre/c"
# pre/b reads raw/a of the same date; pre/c reads raw/a of the two dates before.
GRAPH = planner.from_dependencies([RAW, PRE, LATE], {PRE: [(RAW, 0, 0)], LATE: [(RAW, -2, -1)]})
PHASES = {RAW: 2, PRE: 4, LATE: 4}
TODAY = date(2026, 1, 21)
T0 = datetime(2026, 1, 21, 15, tzinfo=UTC)
POLICY = heal_state.Policy(max_attempts=3, backoff_seconds=60)


def failure(asset, day, n, at=T0, check="row_count"):
    return heal_state.Failure(n, asset, day, check, "0 rows", at)


class Cursor:
    """The heal sensor's cursor over a test's ticks: each decision gives the next state,
    which the test reads through this (``state.targets`` is the latest state's)."""

    def __init__(self) -> None:
        self.value = heal_state.State(watermark=0)

    def __getattr__(self, name):
        return getattr(self.value, name)

    def set(self, **parts) -> None:
        self.value = replace(self.value, **parts)


DOMAIN = [(a, TODAY - timedelta(days=k)) for a in GRAPH.order for k in range(12)]


def world(exists=lambda a, d: False, broken=None, still_fails=None):
    """The tick's world as data, from the test's rules over the dates in play."""
    passing = frozenset(
        (a, d, check)
        for a, d in DOMAIN
        for check in CHECKS
        if still_fails is not None and not still_fails(a, d, check)
    )
    return heal_state.World(
        GRAPH,
        PHASES,
        TODAY,
        existing=frozenset(p for p in DOMAIN if exists(*p)),
        broken={p: tuple(found) for p in DOMAIN if broken and (found := broken(*p))},
        passing=passing,
    )


def decide(state, now, seen=None, exists=lambda a, d: False, broken=None, still_fails=None):
    state.value, decision = healing.decide(
        state.value, seen or Observation(), world(exists, broken, still_fails), now, POLICY
    )
    return decision


def ended(decision_or_key, ok, now, healed=None):
    launch = None if isinstance(decision_or_key, str) else decision_or_key.launch[0]
    key = decision_or_key if launch is None else launch.run_key
    assets = frozenset(p for p in (launch.writes if launch else ()) if p[0] in (healed or ()))
    state = RunState.SUCCESS if ok else RunState.FAILURE
    return {key: RunStatus(state, now, assets, "" if ok else "SourceOutage")}


def test_a_repeated_failure_of_an_owned_target_launches_nothing():
    state = Cursor()
    first = decide(state, T0, Observation(failures=[failure(RAW, TODAY, 1)]))
    assert len(first.launch) == 1 and len(first.records) == 1
    again = decide(
        state, T0 + timedelta(seconds=30), Observation(failures=[failure(RAW, TODAY, 2)])
    )
    assert again.launch == [] and again.records == []
    assert list(state.targets.values())[0].attempts == 1


def test_a_failed_attempt_is_retried_after_its_back_off_without_a_new_failure():
    state = Cursor()
    first = decide(state, T0, Observation(failures=[failure(RAW, TODAY, 1)]))
    end = T0 + timedelta(seconds=10)
    runs = ended(first, ok=False, now=end)
    early = decide(state, end + timedelta(seconds=59), Observation(runs=runs))
    assert early.launch == [] and "backing off after attempt 1" in early.skipped[0]
    second = decide(state, end + timedelta(seconds=61), Observation(runs=runs))
    [launch] = second.launch
    assert launch.tags[names.ATTEMPT] == "2" and launch.run_key != first.launch[0].run_key
    # Attempt 3 waits twice as long after attempt 2 ended.
    end2 = end + timedelta(seconds=70)
    runs = {**runs, **ended(second, ok=False, now=end2)}
    assert decide(state, end2 + timedelta(seconds=119), Observation(runs=runs)).launch == []
    [third] = decide(state, end2 + timedelta(seconds=121), Observation(runs=runs)).launch
    assert third.tags[names.ATTEMPT] == "3"


def test_the_last_failed_attempt_escalates_once_and_nothing_more_that_day():
    state = Cursor()
    runs, now, n = {}, T0, 1
    for _ in range(3):
        d = decide(state, now, Observation(failures=[failure(RAW, TODAY, n)], runs=runs))
        n += 1
        assert len(d.launch) == 1
        now += timedelta(seconds=10)
        runs.update(ended(d, ok=False, now=now))
        now += timedelta(minutes=10)
    final = decide(state, now, Observation(runs=runs))
    [escalation] = final.escalations
    assert escalation.outcome is Outcome.GAVE_UP and escalation.attempt == 3
    assert state.targets == {}
    later = decide(state, now + timedelta(hours=1), Observation(failures=[failure(RAW, TODAY, n)]))
    assert later.launch == [] and later.escalations == [] and "gave up" in later.skipped[0]
    # A pass of the failing check (a person fixed it) clears it: a later break heals again.
    fixed = {(RAW, TODAY, "row_count"): now + timedelta(hours=2)}
    decide(state, now + timedelta(hours=2), Observation(passes=fixed))
    again = decide(
        state, now + timedelta(hours=3), Observation(failures=[failure(RAW, TODAY, n + 1)])
    )
    assert again.launch[0].tags[names.ATTEMPT] == "1"


def test_a_target_whose_check_passes_by_other_means_is_superseded():
    state = Cursor()
    first = decide(state, T0, Observation(failures=[failure(RAW, TODAY, 1)]))
    end = T0 + timedelta(seconds=10)
    runs = ended(first, ok=False, now=end)
    decide(state, end + timedelta(seconds=1), Observation(runs=runs))
    passed = {(RAW, TODAY, "row_count"): end + timedelta(seconds=20)}
    closed = decide(state, end + timedelta(seconds=30), Observation(runs=runs, passes=passed))
    assert state.targets == {} and closed.launch == []
    assert "superseded" in closed.closed[0]
    # A pass of the other check says nothing about this one.
    state = Cursor()
    decide(state, T0, Observation(failures=[failure(RAW, TODAY, 1)]))
    other = {(RAW, TODAY, "freshness"): T0 + timedelta(seconds=20)}
    decide(state, T0 + timedelta(seconds=30), Observation(passes=other))
    assert len(state.targets) == 1


def test_a_healed_run_closes_its_target():
    state = Cursor()
    first = decide(state, T0, Observation(failures=[failure(RAW, TODAY, 1)]))
    runs = ended(first, ok=True, now=T0 + timedelta(seconds=5), healed=[RAW])
    done = decide(state, T0 + timedelta(seconds=30), Observation(runs=runs))
    assert state.targets == {} and "healed" in done.closed[0]


def test_no_heal_of_a_partition_another_run_in_flight_writes():
    state = Cursor()
    busy = {(PRE, TODAY): "backfill-run"}
    exists = lambda a, d: True  # noqa: E731 - so a heal of raw/a would refresh pre/b
    d = decide(state, T0, Observation(failures=[failure(RAW, TODAY, 1)], busy=busy), exists)
    assert d.launch == [] and "backfill-run" in d.skipped[0]
    d = decide(state, T0 + timedelta(seconds=30), Observation(), exists)
    assert [launch.assets for launch in d.launch] == [(RAW, PRE)]


def test_no_heal_computes_on_an_input_another_run_is_rewriting():
    state = Cursor()
    backfill = {(RAW, TODAY - timedelta(days=2)): "backfill-run"}  # pre/c of today reads it
    d = decide(state, T0, Observation(failures=[failure(LATE, TODAY, 1)], busy=backfill))
    assert d.launch == [] and "waits for backfill-run rewriting its inputs" in d.skipped[0]
    [launch] = decide(state, T0 + timedelta(seconds=30), Observation()).launch
    assert launch.assets == (LATE,)


def test_a_target_whose_input_is_given_up_waits_and_spends_no_attempt():
    state = Cursor()
    outage = (RAW, TODAY - timedelta(days=1))
    state.set(gave_up={heal_state.target_key(*outage): heal_state.GaveUp(T0, "row_count")})

    def broken(asset, day):
        return [outage] if (asset, day) == (LATE, TODAY) else []

    seen = Observation(failures=[failure(LATE, TODAY, 1)])
    d = decide(state, T0 + timedelta(seconds=5), seen, broken=broken)
    assert d.launch == [] and "held by raw/a" in d.skipped[0]
    assert list(state.targets.values())[0].attempts == 0
    # A person fixes the outage: its check passes, the held target heals.
    fixed = {(RAW, outage[1], "row_count"): T0 + timedelta(minutes=5)}
    d = decide(state, T0 + timedelta(minutes=6), Observation(passes=fixed))
    [launch] = d.launch
    assert launch.assets == (LATE,) and launch.tags[names.ATTEMPT] == "1"


def test_a_run_held_by_a_missing_input_spends_no_attempt_but_is_bounded():
    state = Cursor()
    now, runs = T0, {}
    d = decide(state, now, Observation(failures=[failure(PRE, TODAY, 1)]))
    for _ in range(POLICY.max_attempts):  # each run finds an input missing (held)
        now += timedelta(seconds=10)
        runs[d.launch[0].run_key] = RunStatus(RunState.FAILURE, now, reason="held", held=True)
        d = decide(state, now + timedelta(seconds=1), Observation(runs=runs))
        assert d.escalations == [] and d.launch[0].tags[names.ATTEMPT] == "1"
    # Past the bound a held run counts: the loop cannot be kept busy for ever.
    now += timedelta(seconds=10)
    runs[d.launch[0].run_key] = RunStatus(RunState.FAILURE, now, reason="held", held=True)
    decide(state, now + timedelta(seconds=1), Observation(runs=runs))
    assert list(state.targets.values())[0].attempts == 1


def test_a_root_cause_outage_is_owned_and_tried_max_attempts_times_in_all():
    state = Cursor()
    outage = (RAW, TODAY)

    def broken(asset, day):
        return [outage] if (asset, day) == (PRE, TODAY) else []

    now, runs, tried = T0, {}, []
    d = decide(state, now, Observation(failures=[failure(PRE, TODAY, 1)]), broken=broken)
    for step in range(12):  # the raw source is down: every run including raw/a fails
        for launch in d.launch:
            if RAW in launch.assets:
                tried.append(launch.run_key)
            runs[launch.run_key] = RunStatus(RunState.FAILURE, now, reason="SourceOutage")
        now += timedelta(minutes=10)
        # The sweep now reports raw/a itself: the loop already owns it.
        seen = Observation(failures=[failure(RAW, TODAY, 10 + step)], runs=runs)
        d = decide(state, now, seen, broken=broken)
    assert len(tried) == POLICY.max_attempts
    assert heal_state.target_key(*outage) in state.gave_up


def test_two_targets_never_heal_the_same_partition_at_once():
    state = Cursor()
    d = decide(state, T0, Observation(failures=[failure(PRE, TODAY, 1)]), lambda a, d: True)
    assert len(d.launch) == 1
    # raw/a of the same date fails now: its heal would rewrite pre/b, being healed.
    d = decide(
        state,
        T0 + timedelta(seconds=5),
        Observation(failures=[failure(RAW, TODAY, 2)]),
        lambda a, d: True,
    )
    assert d.launch == [] and "queued or running" in d.skipped[0]


def test_a_run_request_that_never_became_a_run_counts_as_a_failed_attempt():
    state = Cursor()
    decide(state, T0, Observation(failures=[failure(RAW, TODAY, 1)]))
    quiet = decide(state, T0 + timedelta(minutes=5), Observation())
    assert quiet.launch == [] and quiet.resolutions == []
    lost = decide(state, T0 + timedelta(minutes=11), Observation())
    [resolution] = lost.resolutions
    assert resolution.outcome is Outcome.FAILED and "never started" in resolution.reason
    assert list(state.targets.values())[0].state == TargetState.FAILED


def test_a_dependent_run_dropped_with_its_prerequisite_closes_every_phase():
    state = Cursor()
    day = TODAY - timedelta(days=1)
    d = decide(state, T0, Observation(failures=[failure(RAW, day, 1)]), lambda a, d: True)
    [raw_run] = d.launch
    assert [p.assets for p in state.pending] == [(LATE,)]  # pre/c of today waits for raw/a
    runs = ended(raw_run.run_key, ok=False, now=T0 + timedelta(seconds=5))
    d = decide(state, T0 + timedelta(seconds=10), Observation(runs=runs), lambda a, d: True)
    [resolution] = d.resolutions
    assert resolution.outcome is Outcome.SKIPPED and resolution.phases == (4,)
    assert state.pending == ()


def test_a_run_waiting_on_a_dropped_run_is_dropped_too_and_frees_its_claims():
    """Seen in the soak: a ranged refresh waited on an outage's heal and was dropped when it
    failed; a deeper run waiting on that refresh stayed pending, its claims holding up
    another date's heal for hours."""
    state = Cursor()
    tags = {names.CORRELATION_ID: "cid", names.PHASE: "4"}

    def pending(key, after):
        return heal_state.PendingRun(key, TODAY, (LATE,), after, tags, T0)

    state.set(pending=[pending("refresh", ["outage-heal"]), pending("deeper", ["refresh"])])
    state.set(launched={"outage-heal": heal_state.Launched((), T0)})
    runs = ended("outage-heal", ok=False, now=T0 + timedelta(seconds=5))
    d = decide(state, T0 + timedelta(seconds=10), Observation(runs=runs))
    assert state.pending == () and d.launch == []
    assert [r.outcome for r in d.resolutions] == [Outcome.SKIPPED, Outcome.SKIPPED]
    # A cursor written before this fix: the dropped refresh is gone from it; the deeper
    # run waits on a key that will never run.
    state.set(pending=[pending("deeper", ["refresh"])])
    d = decide(state, T0 + timedelta(seconds=20), Observation())
    assert state.pending == () and len(d.resolutions) == 1
    # A prerequisite launched but not yet seen as a run is still awaited.
    state.set(launched={**state.launched, "soon": heal_state.Launched((), T0)})
    state.set(pending=[pending("after-soon", ["soon"])])
    decide(state, T0 + timedelta(seconds=30), Observation())
    assert [p.run_key for p in state.pending] == ["after-soon"]


def test_an_outage_holds_up_only_what_reads_it():
    state = Cursor()
    d1, d2 = TODAY - timedelta(days=5), TODAY - timedelta(days=4)
    failures = [failure(RAW, d1, 1), failure(RAW, d2, 2)]
    d = decide(state, T0, Observation(failures=failures), lambda a, d: True)
    assert sorted(launch.day for launch in d.launch) == [d1, d2]


@pytest.mark.parametrize("seed", range(60))
def test_random_sequences_keep_every_promise(seed):
    """Random failures, run outcomes and passes over a week of partitions: at most one
    in-flight heal per partition, attempts never past the cap, and, once failures stop,
    every target closed and nothing pending."""
    rng = random.Random(seed)
    days = [TODAY - timedelta(days=i) for i in range(6)]
    partitions = [(a, d) for a in (RAW, PRE, LATE) for d in days]
    state = Cursor()
    now, record, in_flight, statuses = T0, 0, {}, {}
    attempts: dict[tuple[str, date], int] = {}
    present = {p: rng.random() < 0.8 for p in partitions}  # downstream partitions that exist
    exists = lambda a, d: present.get((a, d), False)  # noqa: E731
    for step in range(120):
        now += timedelta(seconds=rng.choice([5, 30, 90, 200]))
        failures, passes = [], {}
        if step < 80:
            for _ in range(rng.randint(0, 2)):
                record += 1
                asset, day = rng.choice(partitions)
                failures.append(failure(asset, day, record, at=now - timedelta(seconds=1)))
            if rng.random() < 0.2:
                asset, day = rng.choice(partitions)
                passes[(asset, day, "row_count")] = now
        for key, writes in list(in_flight.items()):
            if rng.random() < 0.5:
                ok = rng.random() < 0.6
                healed = frozenset(writes) if ok else frozenset()
                statuses[key] = RunStatus(RunState.SUCCESS if ok else RunState.FAILURE, now, healed)
                del in_flight[key]
        busy = {p: key for key, writes in in_flight.items() for p in writes}
        seen = Observation(failures=failures, passes=passes, runs=statuses, busy={})
        for key in in_flight:
            statuses[key] = RunStatus(RunState.IN_FLIGHT)
        d = decide(state, now, seen, exists)
        for launch in d.launch:
            writes = set(launch.writes)
            assert not writes & set(busy), (step, launch, busy)
            busy.update({p: launch.run_key for p in writes})
            in_flight[launch.run_key] = writes
        for t in state.targets.values():
            attempts[t.partition] = t.attempts
            assert t.attempts <= POLICY.max_attempts
        for r in d.escalations:
            assert r.attempt == POLICY.max_attempts
    # Failures stopped: with time and every run finishing, everything closes.
    for _ in range(40):
        now += timedelta(minutes=15)
        for key in list(in_flight):
            statuses[key] = RunStatus(RunState.FAILURE, now)
            del in_flight[key]
        d = decide(state, now, Observation(runs=statuses), exists)
        for launch in d.launch:
            in_flight[launch.run_key] = {(a, launch.day) for a in launch.assets}
    assert state.targets == {} and state.pending == () and in_flight == {}
    assert state.incidents == {}  # and every incident closed


def test_a_target_rewritten_since_its_failing_read_closes_instead_of_healing_twice():
    """A ranged refresh mid-way when the sweep read: the reader looked stale, but by the time
    the loop would heal it, its check passes on the warehouse: superseded, nothing launched."""
    state = Cursor()

    def tick(record_id, fails_now):
        seen = Observation(failures=[failure(RAW, TODAY, record_id)])
        return decide(state, T0, seen, still_fails=lambda asset, day, check: fails_now)

    done = tick(1, fails_now=False)
    assert done.launch == [] and done.records == []
    assert state.targets == {} and "superseded" in done.closed[0]
    done = tick(2, fails_now=True)
    assert len(done.launch) == 1  # failing on the warehouse now: healed


def test_an_incident_keeps_its_correlation_id_over_its_attempts_and_closes_once():
    state = Cursor()
    first = decide(state, T0, Observation(failures=[failure(RAW, TODAY, 1)]))
    cid = first.launch[0].tags[names.CORRELATION_ID]
    end = T0 + timedelta(seconds=10)
    runs = ended(first, ok=False, now=end)
    second = decide(state, end + timedelta(seconds=61), Observation(runs=runs))
    [retry] = second.launch
    assert retry.tags[names.CORRELATION_ID] == cid  # the same incident
    assert retry.run_key != first.launch[0].run_key  # a new run key for each attempt
    [record] = second.records
    assert record.correlation_id == cid and record.id.endswith(f"{cid[:8]}_2")
    assert second.closing == [] and cid in state.incidents
    runs.update(ended(second, ok=True, now=end + timedelta(seconds=70), healed=[RAW]))
    done = decide(state, end + timedelta(seconds=80), Observation(runs=runs))
    [closed] = done.closing
    assert closed.outcome is Outcome.CLOSED and closed.correlation_id == cid
    assert state.incidents == {}
    assert decide(state, end + timedelta(seconds=90), Observation(runs=runs)).closing == []


def test_new_failures_open_a_new_incident_beside_a_retry():
    state = Cursor()
    day2 = TODAY - timedelta(days=4)
    first = decide(state, T0, Observation(failures=[failure(RAW, TODAY, 1)]))
    runs = ended(first, ok=False, now=T0 + timedelta(seconds=5))
    later = T0 + timedelta(minutes=5)
    d = decide(state, later, Observation(failures=[failure(RAW, day2, 2)], runs=runs))
    cids = {launch.day: launch.tags[names.CORRELATION_ID] for launch in d.launch}
    assert cids[TODAY] == first.launch[0].tags[names.CORRELATION_ID]
    assert cids[day2] != cids[TODAY] and len(state.incidents) == 2


def test_new_failures_wait_while_a_sweep_is_still_recording_up_to_the_group_wait():
    state = Cursor()
    seen = Observation(failures=[failure(RAW, TODAY - timedelta(days=3), 1)], sweeping=True)
    d = decide(state, T0 + timedelta(seconds=5), seen)
    assert d.launch == [] and "waits for the sweep" in d.skipped[0]
    # More of the same sweep's results: one incident for all that touch (LATE of TODAY-2
    # reads both dates) once it ended.
    more = Observation(failures=[failure(RAW, TODAY - timedelta(days=4), 2)])
    d = decide(state, T0 + timedelta(seconds=15), more, lambda a, d: True)
    assert len(d.launch) == 2 and len({x.tags[names.CORRELATION_ID] for x in d.launch}) == 1
    # A sweep that never ends holds a new failure no longer than the group wait.
    state = Cursor()
    late = T0 + timedelta(seconds=POLICY.group_wait_seconds + 1)
    assert len(decide(state, late, seen).launch) == 1


def test_a_target_superseded_after_an_attempt_closes_its_incident_in_the_history():
    state = Cursor()
    first = decide(state, T0, Observation(failures=[failure(RAW, TODAY, 1)]))
    end = T0 + timedelta(seconds=10)
    runs = ended(first, ok=False, now=end)
    decide(state, end + timedelta(seconds=1), Observation(runs=runs))
    passed = {(RAW, TODAY, "row_count"): end + timedelta(seconds=20)}
    d = decide(state, end + timedelta(seconds=30), Observation(runs=runs, passes=passed))
    superseded, closed = d.closing
    assert superseded.outcome is Outcome.SUPERSEDED and superseded.id.endswith("_superseded")
    assert closed.outcome is Outcome.CLOSED


def test_a_give_up_names_the_existing_partitions_held_because_they_read_it():
    state = Cursor()
    exists = lambda a, d: a != RAW  # noqa: E731 - every Phase 4 partition exists
    now, runs = T0, {}
    d = decide(
        state, now, Observation(failures=[failure(RAW, TODAY - timedelta(days=3), 1)]), exists
    )
    for _ in range(3):
        for launch in d.launch:
            runs[launch.run_key] = RunStatus(RunState.FAILURE, now, reason="SourceOutage")
        now += timedelta(minutes=10)
        d = decide(state, now, Observation(runs=runs), exists)
    [gave_up] = d.escalations
    # pre/b reads raw/a of the same date; pre/c of the two dates after.
    assert gave_up.held == [
        [PRE, "2026-01-18", "2026-01-18"],
        [LATE, "2026-01-19", "2026-01-20"],
    ]


@pytest.mark.parametrize("seed", range(20))
def test_decide_is_pure_the_same_inputs_give_equal_outputs_and_the_state_stays_as_given(seed):
    """Random ticks, each decided twice from the same state: equal next states and decisions,
    and the state given is unchanged (it is frozen: changing it raises)."""
    rng = random.Random(seed)
    days = [TODAY - timedelta(days=i) for i in range(4)]
    partitions = [(a, d) for a in (RAW, PRE, LATE) for d in days]
    present = {p: rng.random() < 0.7 for p in partitions}
    w = world(lambda a, d: present.get((a, d), False))
    state, now, statuses, record, launched = heal_state.State(watermark=0), T0, {}, 0, 0
    for _ in range(40):
        now += timedelta(seconds=rng.choice([5, 60, 400]))
        failures = []
        for _ in range(rng.randint(0, 2)):
            record += 1
            failures.append(failure(*rng.choice(partitions), record, at=now))
        seen = Observation(failures=failures, runs=dict(statuses))
        before = state.to_json()
        first, decision = healing.decide(state, seen, w, now, POLICY)
        again, decision_again = healing.decide(state, seen, w, now, POLICY)
        assert (first, decision) == (again, decision_again)
        assert state.to_json() == before
        launched += len(decision.launch)
        for launch in decision.launch:
            ok = rng.random() < 0.5
            healed = frozenset(launch.writes) if ok else frozenset()
            statuses[launch.run_key] = RunStatus(
                RunState.SUCCESS if ok else RunState.FAILURE, now, healed
            )
        state = first
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.watermark = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        state.targets["x"] = None  # type: ignore[index]
    assert launched > 0  # the sequence exercised launches, not only waits


def test_failures_found_in_one_tick_are_one_incident_only_where_their_plans_touch():
    """A root cause and its reader are one plan (reader after it); a failure far from both
    (no refresh reads both) is an incident of its own, launched in the same tick."""
    state = Cursor()
    far = TODAY - timedelta(days=8)
    found = [failure(PRE, TODAY - timedelta(days=3), 1)]
    found += [failure(RAW, TODAY - timedelta(days=3), 2), failure(RAW, far, 3)]
    d = decide(state, T0, Observation(failures=found), lambda a, d: True)
    by_cid: dict[str, list] = {}
    for launch in d.launch:
        by_cid.setdefault(launch.tags[names.CORRELATION_ID], []).append(launch)
    assert len(by_cid) == len(state.incidents) == 2
    near = state.targets[heal_state.target_key(PRE, TODAY - timedelta(days=3))]
    root = state.targets[heal_state.target_key(RAW, TODAY - timedelta(days=3))]
    alone = state.targets[heal_state.target_key(RAW, far)]
    assert near.cid == root.cid != alone.cid
    # One plan: the root cause, then its reader of that date in the same run, in order;
    # the refresh of the dates after it waits for that run. No target of it is held.
    [run] = [x for x in by_cid[root.cid] if x.day == root.day]
    assert run.assets == (RAW, PRE) and near.run_key == root.run_key == run.run_key
    [waiting] = [p for p in state.pending if p.tags[names.CORRELATION_ID] == root.cid]
    assert waiting.assets == (LATE,) and waiting.after == (root.run_key,)
    assert not [line for line in d.skipped if "held by" in line]


def test_a_held_target_refreshed_by_another_incident_closes_healed_and_never_failed():
    """Incident A's refresh of LATE is held (its input was being rewritten); incident B's
    run then recomputes it and the check passes there: A closes saying B healed it, with
    no "Failed" anywhere in what a webhook or a thread would be told."""
    from selfheal_dagster.core import messages
    from selfheal_dagster.core.incidents import Incident

    state = Cursor()
    day = TODAY - timedelta(days=1)
    first = decide(state, T0, Observation(failures=[failure(LATE, day, 1)]), lambda a, d: True)
    [launch] = first.launch
    cid = launch.tags[names.CORRELATION_ID]
    held = {launch.run_key: RunStatus(RunState.FAILURE, T0, reason="held", held=True)}
    records = [
        r.resolved(Outcome.SKIPPED, T0, "not computed: an input is missing") for r in first.records
    ]
    later = T0 + timedelta(seconds=30)
    rewriting = {(RAW, day - timedelta(days=1)): "b-run"}  # incident B reloads its input
    d = decide(state, later, Observation(runs=held, busy=rewriting), lambda a, d: True)
    assert d.launch == [] and state.targets[heal_state.target_key(LATE, day)].holds == 1
    assert "waits for b-run rewriting its inputs" in d.skipped[0]
    # Incident "b0b0b0b0-…" recomputed it: its run recorded the pass.
    key = (LATE, day, "row_count")
    passed = Observation(passes={key: later}, passed_by={key: "b0b0b0b0-1111"}, runs=held)
    d = decide(state, later + timedelta(seconds=1), passed, lambda a, d: True)
    assert not state.targets and not state.incidents
    [closing] = [r for r in d.closing if r.outcome is Outcome.SUPERSEDED]
    assert "healed by incident b0b0b0b0" in closing.healing_result.reason
    incident = Incident.of(cid, [*records, *d.closing])
    status, color = incident.status(POLICY.max_attempts)
    assert color == "healed" and "incident b0b0b0b0" in status, status
    said = [
        messages.close(incident, POLICY.max_attempts, [], []),
        *(o.message for o in messages.owed(incident, mode="all", threads=True, max_attempts=3)),
    ]
    text = "\n".join(m.text() for m in said)
    assert "Failed" not in text and "did not heal" not in text and "retrying" not in text, text
    assert "healed by the runs of incident b0b0b0b0" in text and "no attempt spent" in text


def test_a_launch_again_after_a_held_run_has_a_run_key_and_records_of_its_own():
    """A run that waited for an input spends no attempt; the launch again is the same
    attempt, but a new run (a run key Dagster has not seen) with new history records, so
    what it heals is recorded (the first records stay as they ended: skipped)."""
    state = Cursor()
    d = decide(state, T0, Observation(failures=[failure(PRE, TODAY, 1)]))
    [first] = d.launch
    held = {first.run_key: RunStatus(RunState.FAILURE, T0, reason="held", held=True)}
    again = decide(state, T0 + timedelta(seconds=11), Observation(runs=held))
    [second] = again.launch
    assert second.run_key != first.run_key and second.tags[names.ATTEMPT] == "1"
    assert {r.id for r in again.records}.isdisjoint({r.id for r in d.records})
    assert all(r.id.endswith("_w1") and r.waited == 1 for r in again.records)


def test_an_incident_whose_repairs_healed_and_refresh_waited_closes_repaired_not_failed():
    """The root cause reloaded; the refresh of its readers found another input broken and
    did not run (held): nothing failed, so the closing says what was repaired and what
    was deferred, never "Failed" or "retrying"."""
    from selfheal_dagster.core import heal_records, messages
    from selfheal_dagster.core.incidents import Incident

    state = Cursor()
    d = decide(
        state,
        T0,
        Observation(failures=[failure(RAW, TODAY - timedelta(days=3), 1)]),
        lambda a, d: True,
    )
    cid = d.launch[0].tags[names.CORRELATION_ID]
    later = T0 + timedelta(minutes=1)
    records = [
        r.resolved(Outcome.HEALED, later, "reloaded")
        if r.missing_components
        else r.resolved(Outcome.SKIPPED, later, "held: an input is missing")
        for r in d.records
    ]
    assert {r.outcome for r in records} == {Outcome.HEALED, Outcome.SKIPPED}
    marker = heal_records.closed(cid, RAW, TODAY - timedelta(days=3), PHASES, later)
    incident = Incident.of(cid, [*records, marker])
    status, color = incident.status(3)
    assert color == "healed" and "Repaired on attempt 1" in status and "Phase 4" in status
    said = [messages.close(incident, 3, [], [])]
    said += [o.message for o in messages.owed(incident, mode="all", threads=True, max_attempts=3)]
    text = "\n".join(m.text() for m in said)
    assert "Failed" not in text and "retrying" not in text and "did not heal" not in text, text
