"""The pure heal planner, on the real asset graph and on a hand-made one."""

import random
from datetime import date, timedelta

import pytest

from selfheal_dagster.core import planner
from selfheal_dagster.instance.heal_loop import planner_graph
from selfheal_dagster.tables import in_phase

TODAY = date(2026, 1, 21)
PHASE4 = [t.key for t in in_phase(4)]
BOX = "nba_raw/bdl_player_boxscores"


@pytest.fixture
def graph(defs):
    return planner_graph(defs.resolve_asset_graph())


def only_today_phase4(asset, day):
    return day == TODAY or asset.startswith("nba_raw/")


def test_a_failed_feature_store_heals_only_the_feature_store(graph):
    plan = planner.plan(
        [("nba_predictions/ml_feature_store_v2", TODAY)], graph, only_today_phase4, TODAY
    )
    assert plan.as_dict() == {"2026-01-21": ["nba_predictions/ml_feature_store_v2"]}


def test_a_failed_daily_cache_heals_cache_composite_and_feature_store(graph):
    plan = planner.plan(
        [("nba_predictions/player_daily_cache", TODAY)], graph, only_today_phase4, TODAY
    )
    assert plan.as_dict() == {
        "2026-01-21": [
            "nba_predictions/player_daily_cache",
            "nba_precompute/player_composite_factors",
            "nba_predictions/ml_feature_store_v2",
        ]
    }


def test_failed_box_scores_heal_that_day_then_existing_phase4_partitions_that_read_it(graph):
    x = TODAY - timedelta(days=1)
    plan = planner.plan([(BOX, x)], graph, only_today_phase4, TODAY)
    assert plan.as_dict() == {"2026-01-20": [BOX], "2026-01-21": PHASE4}
    assert plan.runs[1].after == (x.isoformat(),) and plan.runs[1].failed == ()
    assert plan.runs[0].failed == (BOX,)


def test_only_existing_downstream_partitions_within_the_lookback_are_refreshed(graph):
    x = TODAY - timedelta(days=20)
    every_day = lambda asset, day: True  # noqa: E731
    plan = planner.plan([(BOX, x)], graph, every_day, TODAY)
    days = [date.fromisoformat(d) for d in plan.as_dict()]
    assert days == [x + timedelta(days=i) for i in range(21)]  # X .. today, nothing later
    # A box-score day's heal: that day, then one ranged run over the dates that read it.
    [box, refresh] = plan.runs
    assert (box.day, box.last, box.assets, box.failed) == (x, None, (BOX,), (BOX,))
    assert (refresh.day, refresh.last, refresh.failed) == (x + timedelta(days=1), TODAY, ())
    assert refresh.assets == tuple(PHASE4) and refresh.after == (box.key,)
    nothing = planner.plan([(BOX, x)], graph, lambda a, d: False, TODAY)
    assert nothing.as_dict() == {x.isoformat(): [BOX]}


def test_a_range_takes_an_asset_a_date_does_not_need_only_if_rewriting_it_is_harmless(graph):
    """Team defense looks back 15 days: dates more than 15 days after X do not read X. A
    ranged run writes every asset on every date, so those dates join the range only where
    that partition exists already (recomputing it gives the same rows)."""
    x = TODAY - timedelta(days=20)
    defense = "nba_precompute/team_defense_zone_analysis"
    late = x + timedelta(days=16)
    not_late = lambda asset, day: asset != defense or day < late  # noqa: E731
    plan = planner.plan([(BOX, x)], graph, not_late, TODAY)
    assert [(r.day, r.last) for r in plan.runs] == [
        (x, None),
        (x + timedelta(days=1), late - timedelta(days=1)),
        (late, TODAY),
    ]
    assert defense in plan.runs[1].assets and defense not in plan.runs[2].assets
    assert (defense, late) not in plan.writes()


def test_a_multi_date_multi_table_batch(graph):
    failed = [
        (BOX, TODAY - timedelta(days=2)),
        ("nba_raw/odds_api_game_lines", TODAY - timedelta(days=1)),
        ("nba_precompute/player_composite_factors", TODAY),
        ("nba_raw/nbac_schedule", TODAY - timedelta(days=1)),
    ]
    exists = lambda asset, day: day >= TODAY - timedelta(days=2)  # noqa: E731
    plan = planner.plan(failed, graph, exists, TODAY).as_dict()
    assert plan["2026-01-19"] == [BOX]
    # The schedule of D feeds every raw table and the Phase 4 of D (same date).
    assert plan["2026-01-20"] == [
        "nba_raw/nbac_schedule",
        "nba_raw/bdl_player_boxscores",
        "nba_raw/nbac_gamebook_player_stats",
        "nba_raw/odds_api_game_lines",
        *PHASE4,
    ]
    assert plan["2026-01-21"] == PHASE4
    runs = planner.plan(failed, graph, exists, TODAY).runs
    # 01-20's raw tables go at once; its Phase 4 waits for 01-19's box scores, in a run of
    # its own, so a failure on 01-19 never holds up the raw tables of 01-20.
    assert [(r.key, r.after) for r in runs] == [
        ("2026-01-19", ()),
        ("2026-01-20", ()),
        ("2026-01-20-1", ("2026-01-19", "2026-01-20")),
        ("2026-01-21", ("2026-01-19", "2026-01-20")),
    ]


def test_hand_made_graph_and_order():
    g = planner.from_dependencies(
        ["a", "b", "c"], {"b": [("a", 0, 0)], "c": [("b", -2, -1), ("a", 0, 0)]}
    )
    d = date(2026, 3, 1)
    plan = planner.plan([("a", d)], g, lambda asset, day: True, d + timedelta(days=5))
    assert plan.as_dict() == {
        "2026-03-01": ["a", "b", "c"],
        "2026-03-02": ["c"],
        "2026-03-03": ["c"],
    }
    assert plan.partitions == 5


def test_an_independent_gap_never_waits_behind_another_dates_repair(graph):
    d1, d2 = TODAY - timedelta(days=3), TODAY - timedelta(days=2)
    plan = planner.plan([(BOX, d1), (BOX, d2)], graph, only_today_phase4, TODAY)
    runs = {r.key: r for r in plan.runs}
    assert runs[d2.isoformat()].assets == (BOX,) and runs[d2.isoformat()].after == ()
    assert runs[TODAY.isoformat()].after == (d1.isoformat(), d2.isoformat())


def test_root_cause_first_the_broken_inputs_of_a_target_are_repaired_before_it(graph):
    features, odds = "nba_predictions/ml_feature_store_v2", "nba_raw/odds_api_game_lines"

    def broken(asset, day):
        return [(odds, day)] if asset == features and day == TODAY else []

    plan = planner.plan([(features, TODAY)], graph, lambda a, d: False, TODAY, broken)
    assert [(r.key, r.assets, r.failed) for r in plan.runs] == [
        ("2026-01-21", (odds, features), (odds, features))
    ]


def test_a_reader_of_a_partition_the_plan_cannot_repair_is_left_alone(graph):
    x = TODAY - timedelta(days=1)
    held = (BOX, TODAY - timedelta(days=4))  # an outage nobody is repairing

    def broken(asset, day):
        return [held] if asset in PHASE4 else []

    gave_up = lambda p: p != held  # noqa: E731 - the outage was given up
    plan = planner.plan([(BOX, x)], graph, lambda a, d: True, TODAY, broken, gave_up)
    assert plan.as_dict() == {x.isoformat(): [BOX]}  # Phase 4 would fail on the outage
    # Repairable, the broken input joins the plan ahead of the refreshes that read it.
    plan = planner.plan([(BOX, x)], graph, lambda a, d: True, TODAY, broken)
    assert plan.as_dict()[held[1].isoformat()] == [BOX]
    assert plan.as_dict()[TODAY.isoformat()] == PHASE4


def assert_sound(plan, graph):
    """Each partition written by one run only; each run after every other run it reads."""
    rank = {a: i for i, a in enumerate(graph.order)}
    writer: dict = {}
    for run in plan.runs:
        for p in run.partitions:
            assert p not in writer, f"{p} written by {writer[p]} and {run.key}"
            writer[p] = run.key
    done: set[str] = set()
    for run in plan.runs:
        for asset, day in run.partitions:
            for read in graph.reads(asset, day):
                if writer.get(read) == run.key:  # computed earlier in the same run
                    assert rank[read[0]] < rank[asset], (run.key, asset, day, read)
                elif read in writer:
                    assert writer[read] in run.after and writer[read] in done, (run.key, read)
        done.add(run.key)


def test_one_dates_parts_each_grow_their_own_range_and_never_write_one_partition_twice(graph):
    """Found by the soak: the Phase 4 of a date came in two parts that wait for different
    dates (the shot-zone lookback reaches an older repair than the defense one). A ranged run
    took the other part's table as a harmless extra, so two runs of one plan wrote the same
    partitions, at the same time."""
    d = lambda n: date(2026, 11, n)  # noqa: E731
    failed = [
        ("nba_raw/nbac_schedule", d(17)),
        ("nba_raw/nbac_schedule", d(16)),
        ("nba_raw/odds_api_game_lines", d(16)),
        ("nba_raw/nbac_gamebook_player_stats", d(9)),
        ("nba_precompute/player_shot_zone_analysis", d(8)),
        ("nba_raw/nbac_schedule", d(2)),
    ]
    plan = planner.plan(failed, graph, lambda a, day: True, d(30))
    assert_sound(plan, graph)
    defense, shots = (
        "nba_precompute/team_defense_zone_analysis",
        "nba_precompute/player_shot_zone_analysis",
    )
    runs = {r.key: r for r in plan.runs}
    # The two parts of 11-18 .. 11-30: one range each, side by side, not 26 one-date runs.
    assert runs["2026-11-18..2026-11-30"].assets == (defense,)
    assert runs["2026-11-18..2026-11-30-1"].assets == (shots,)
    assert len(plan.runs) <= 12


@pytest.mark.parametrize("seed", range(40))
def test_random_failures_plan_sound_runs(graph, seed, monkeypatch):
    """Merging dates into ranges keeps every partition the one-date runs write, adds only
    existing ones, and the merged plan is as sound as the unmerged one."""
    rng = random.Random(seed)
    days = [TODAY - timedelta(days=i) for i in range(30)]
    failed = [(rng.choice(graph.order), rng.choice(days)) for _ in range(rng.randint(1, 7))]
    present = {(a, d): rng.random() < 0.9 for a in graph.order for d in days}
    exists = lambda a, d: present.get((a, d), False)  # noqa: E731
    plan = planner.plan(failed, graph, exists, TODAY)
    assert_sound(plan, graph)
    with monkeypatch.context() as m:
        m.setattr(planner, "_merge_ranges", lambda runs, rank, may_write: runs)
        per_date = planner.plan(failed, graph, exists, TODAY)
    assert set(failed) <= per_date.writes() <= plan.writes()
    assert all(exists(*p) for p in plan.writes() - per_date.writes())
    assert len(plan.runs) <= len(per_date.runs)
