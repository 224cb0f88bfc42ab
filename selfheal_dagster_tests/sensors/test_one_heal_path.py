"""One heal path: what one tick (or one ``selfheal heal``) finds broken and connected is one
incident with one plan, run in dependency order; a person's heal waits for what the sensor
waits for; a person's heal of a target given up on answers the page. A real Dagster instance
and DuckDB file, the real heal sensor and CLI."""

import threading
import time
from datetime import timedelta

import dagster as dg

from selfheal_dagster import report, runs
from selfheal_dagster.core import heal_state, names
from selfheal_dagster.core.dates import eastern, partition_tags
from selfheal_dagster.core.history import Outcome
from selfheal_dagster.core.incidents import Incident
from selfheal_dagster.tables import BY_NAME, execution_order, in_phase
from selfheal_dagster_tests.support import GAME_DAY, fingerprint
from selfheal_dagster_tests.support import selfheal_here as selfheal

D = GAME_DAY
ODDS = BY_NAME["odds_api_game_lines"]
BOX = BY_NAME["bdl_player_boxscores"]
CACHE = BY_NAME["player_daily_cache"]
# The odds and the five Phase 4 tables of one date: one run, in dependency order.
IN_ORDER = [t.key for t in execution_order([ODDS, *in_phase(4)])]


def break_odds_and_phase4(history, instance, defs) -> dict[str, list[tuple]]:
    """Phase 4 of D computed, then the odds of D and all five Phase 4 tables of D deleted:
    the truth to heal back to."""
    [done] = runs.materialize([D], in_phase(4), dagster_instance=instance, defs=defs)
    assert done.success, done.errors
    broken = [ODDS, *in_phase(4)]
    truth = {t.name: fingerprint(history, t, D) for t in broken}
    assert all(truth.values())
    for table in broken:
        history.punch_gap(table, D)
    return truth


def swept_loop(defs, instance) -> tuple[runs.LocalLoop, dict]:
    """The in-process heal loop, started, and what the sweep of D (as of the next day,
    13:00 US/Eastern) recorded."""
    loop = runs.LocalLoop(defs, instance)
    loop.start()
    swept = loop.sweep(
        start=D.isoformat(),
        end=D.isoformat(),
        now=eastern(D + timedelta(days=1), 13).isoformat(),
        reassert_minutes=0,
    )
    return loop, swept


def one_incident(history) -> Incident:
    """The one incident the history holds for D (every record of D shares its ID)."""
    records = history.history(day=D)
    cids = {r.correlation_id for r in records}
    assert len(cids) == 1, sorted((r.correlation_id[:8], r.id, str(r.outcome)) for r in records)
    return Incident.of(cids.pop(), records)


def assert_in_dependency_order(healed: list[runs.HealRun]) -> None:
    """One run: the odds first, then the five Phase 4 tables, in execution order."""
    selections = [[k.to_user_string() for k in h.request.asset_selection] for h in healed]
    assert selections == [IN_ORDER], selections
    assert all(h.outcome == "healed" for h in healed), healed
    assert len({h.request.tags[names.CORRELATION_ID] for h in healed}) == 1


def test_odds_and_the_five_phase4_tables_found_in_one_tick_are_one_incident(
    history, instance, defs
):
    truth = break_odds_and_phase4(history, instance, defs)
    loop, swept = swept_loop(defs, instance)
    assert swept["failing_count"] >= 6, swept["failing"]
    first = loop.tick()  # one tick finds all six
    state = heal_state.State.from_json(loop.cursor)
    assert len(first.run_requests) == 1 and state.pending == ()  # one run, nothing waiting
    assert len(state.targets) == 6 and len(state.incidents) == 1
    healed = []
    for request in first.run_requests:
        run_id = loop.execute(request).run_id
        healed.append(runs.HealRun(request, run_id, *loop.verify(run_id)))
    assert loop.heal_until_quiet() == []  # nothing more to run
    assert_in_dependency_order(healed)
    incident = one_incident(history)
    assert incident.closed and incident.status(3)[1] == "healed", incident.status(3)
    for table in [ODDS, *in_phase(4)]:
        assert fingerprint(history, table, D) == truth[table.name], table.name


def test_the_same_through_selfheal_heal(history, home_instance, defs, capsys):
    truth = break_odds_and_phase4(history, home_instance, defs)
    dry = selfheal("heal", "--date", D.isoformat(), "--dry-run")
    out = capsys.readouterr().out
    assert dry == 0 and "dry run: nothing launched" in out
    assert history.history(day=D) == []  # a dry run writes nothing
    code = selfheal("heal", "--date", D.isoformat())
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count(": healed") == 1, out
    assert "🔧 Self-Heal Triggered" in out  # its alerts, through the log sink
    incident = one_incident(history)
    assert incident.closed and incident.status(1)[1] == "healed"
    [run] = runs.instance().get_runs(dg.RunsFilter(job_name="heal_job"))
    steps = [
        e.step_key
        for e in runs.instance().all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
    ]
    assets = [s.replace("__", "/") for s in steps if s.replace("__", "/") in IN_ORDER]
    assert sorted(assets) == sorted(IN_ORDER)
    graph = defs.resolve_asset_graph()
    for asset in assets:  # every input of the run's assets computed before it
        for parent in graph.get(dg.AssetKey.from_user_string(asset)).parent_keys:
            if parent.to_user_string() in assets:
                assert assets.index(parent.to_user_string()) < assets.index(asset), assets
    assert assets.index(ODDS.key) < assets.index(BY_NAME["ml_feature_store_v2"].key)
    assert run.tags[names.CORRELATION_ID] == incident.cid
    for table in [ODDS, *in_phase(4)]:
        assert fingerprint(history, table, D) == truth[table.name], table.name


def test_selfheal_heal_waits_for_a_backfill_rewriting_its_input(history, instance, defs):
    """Phase 4's player cache of D is missing; a backfill of the box scores it reads is
    running: the person's heal waits for it, as the sensor does, then heals."""
    [done] = runs.materialize([D], in_phase(4), dagster_instance=instance, defs=defs)
    assert done.success
    history.punch_gap(CACHE, D)
    span = f"{D - timedelta(days=1)}..{D}"
    backfill = instance.create_run_for_job(
        defs.resolve_job_def("daily_job"),
        asset_selection=frozenset({dg.AssetKey(BOX.key_path)}),
        tags={
            names.BACKFILL: span,
            names.BACKFILL_STEP: "1/1",
            **partition_tags([D - timedelta(days=1), D]),
        },
    )
    instance.handle_run_event(
        backfill.run_id,
        dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value, job_name="daily_job"),
    )
    assert instance.get_run_by_id(backfill.run_id).status == dg.DagsterRunStatus.STARTED
    ended: list[float] = []

    def finish() -> None:
        time.sleep(4)
        ended.append(time.time())
        instance.report_run_canceled(instance.get_run_by_id(backfill.run_id))

    failing = report.failures(report.evaluate_now([D], [CACHE]))
    assert {o.table.name for o in failing} == {CACHE.name}
    waits: list[list[str]] = []
    finisher = threading.Thread(target=finish)
    finisher.start()
    try:
        heal = runs.heal_now(
            failing, defs, instance, wait_seconds=120, poll_seconds=0.5, on_wait=waits.append
        )
    finally:
        finisher.join()
    assert waits and backfill.run_id in waits[0][0] and "rewriting its inputs" in waits[0][0]
    [run] = heal.runs
    started = instance.get_run_record_by_id(run.run_id).start_time
    assert run.outcome == "healed" and started >= ended[0]
    assert heal.healed and one_incident(history).closed


def test_a_person_heal_of_a_target_given_up_on_answers_its_page(
    history, instance, defs, monkeypatch
):
    """The source is down: the loop tries once (this test's cap), gives up and pages. The
    source comes back and a person runs ``selfheal heal``: its run heals the box scores,
    and the page's own incident says so (thread reply or, with a webhook, a message of
    its own), naming the incident and run that fixed it."""
    from dataclasses import replace

    from selfheal_dagster.core import messages
    from selfheal_dagster.definitions import defs as load
    from selfheal_dagster.defs.heal import heal_tick
    from selfheal_dagster.instance.heal_loop import verify

    monkeypatch.setenv("SELFHEAL_LEAGUE_OUTAGES", f"{BOX.name}@{D}")
    history.punch_gap(BOX, D)
    loop, _ = swept_loop(load(), instance)
    policy = heal_state.Policy(max_attempts=1, backoff_seconds=0)
    for _ in range(3):
        result = heal_tick(loop.context(), history, policy)
        loop.cursor = result.cursor
        for request in result.run_requests:
            run = loop.execute(request)
            verify(instance, instance.get_run_by_id(run.run_id), history)
    [page] = [r for r in history.history(day=D) if r.outcome is Outcome.GAVE_UP]
    paged = Incident.of(page.correlation_id, history.history(correlation_id=page.correlation_id))
    assert paged.closed and paged.status(1)[1] == "gave_up"

    monkeypatch.delenv("SELFHEAL_LEAGUE_OUTAGES")  # the source delivers again
    failing = report.failures(report.evaluate_now([D], [BOX]))
    heal = runs.heal_now(failing, load(), instance)
    assert heal.healed, heal
    [run] = heal.runs
    person = run.request.tags[names.CORRELATION_ID]
    assert person != page.correlation_id  # a heal of its own, with its own incident
    records = history.history(correlation_id=page.correlation_id)
    [fixed] = [r for r in records if r.outcome is Outcome.FIXED]
    assert fixed.run_ids == [run.run_id] and fixed.assets == [BOX.key]
    answered = Incident.of(page.correlation_id, records)
    status, color = answered.status(3)
    assert color == "healed" and f"healed by incident {person[:8]}" in status, status
    assert any(n["key"] == f"fixed:{fixed.id}" for n in answered.notes)  # it was delivered
    fresh = Incident.of(page.correlation_id, [replace(r, alerts=[]) for r in records])
    for threads, where in ((True, "thread"), (False, "new")):
        owed = {o.key: o for o in messages.owed(fresh, mode="all", threads=threads, max_attempts=3)}
        said = owed[f"fixed:{fixed.id}"]
        assert said.where == where and run.run_id[:8] in said.message.title
        assert f"healed by incident {person[:8]}" in said.message.title
    # The heal sensor sees the pass the person's run recorded and lets go of its give-up.
    assert heal_state.State.from_json(loop.cursor).gave_up
    loop.cursor = heal_tick(loop.context(), history, policy).cursor
    assert not heal_state.State.from_json(loop.cursor).gave_up


class OnlyReads:
    """A warehouse with nothing but the two reads a tick's ``gather`` is typed to make."""

    def __init__(self, warehouse) -> None:
        self._warehouse = warehouse
        self.calls: list[str] = []

    def window_stats(self, tables, start, end, metadata=False):
        self.calls.append("window_stats")
        return self._warehouse.window_stats(tables, start, end, metadata=metadata)

    def history(self, **where):
        self.calls.append("history")
        return self._warehouse.history(**where)


def test_gather_reads_through_the_reader_protocol_and_nothing_else(history, instance, defs):
    """``gather`` given an object with only ``window_stats`` and ``history`` finds the
    sweep's failure: a write (or any other warehouse call) would raise AttributeError."""
    from selfheal_dagster.instance import heal_loop

    history.punch_gap(BOX, D)
    loop, _ = swept_loop(defs, instance)
    reader = OnlyReads(history)
    state = heal_state.State.from_json(loop.cursor)
    now = eastern(D + timedelta(days=1), 14)
    observation, world = heal_loop.gather(
        instance,
        state,
        reader,
        graph=heal_loop.planner_graph(defs.resolve_asset_graph()),
        today=D + timedelta(days=1),
        now=now,
    )
    assert (BOX.key, D) in {(f.asset, f.day) for f in observation.failures}
    assert not world.exists(BOX.key, D) and reader.calls == ["window_stats"]
    assert observation.watermark is not None and loop.cursor == state.to_json()  # unmoved
