"""Soak: a month of random faults under ``dagster dev``, and what the heal loop made of them.

A warehouse holds 30 days of all nine tables (and the Phase 2 history before them); a copy of
it, untouched, is the truth. ``dagster dev`` (webserver + daemon, on a free loopback port)
runs the real sweep, heal, outcome and alerts sensors with the default sweep settings apart
from the intervals and the watch windows (the whole month). Faults arrive in waves: deletions,
partial deliveries and doubled or tripled loads on every table, some on no-game days, plus
two permanent outages. When the loop is quiet it prints:

- detected %: faults (that changed rows) the loop acted on, and the same for the doubled and
  tripled loads alone;
- healed exact %: faulted partitions (outages aside) whose rows equal the truth's, ``_loaded_at``
  aside;
- Phase 4 partitions of the month that differ from the truth at the end (one computed from a
  doubled input would);
- concurrent heal runs (two writing one partition at once) and redundant ones (a partition
  healed twice for one fault);
- history records left open, false alerts (a heal of a partition no fault touched or read),
  attempts and gave-ups per outage, median and max time from a fault to its heal;
- what the on-call channel saw, from a Slack Web API on 127.0.0.1 that the alerts sensor
  posts to with a bot token: messages per incident, top-level messages, pages, messages of
  their own for skipped or held refreshes, and whether every page names what it holds.

    python benchmarks/soak_heal.py [--waves 6] [--per-wave 5] [--seed 7]
"""

import argparse
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAYS = 30  # the month of partitions under watch
BACKOFF = 20
KINDS = ("delete", "delete", "keep 0.4", "keep 0.6", "x2", "x3")


def fingerprint(wh, table, day) -> list[tuple]:
    cols = [c for c in table.column_names if c != "_loaded_at"]
    rows = wh.query(
        f"SELECT {', '.join(cols)} FROM {wh.ref(table)} WHERE {table.partition_column} = $d "
        "ORDER BY ALL",
        {"d": day},
    )
    return [tuple(r.values()) for r in rows]


def rounded(wh, table, day) -> list[tuple]:
    """``fingerprint`` with floats to 12 significant digits: an average summed in another
    order (a range computed at once, or one date) differs in the last bit, not in value."""
    return [
        tuple(float(f"{v:.12g}") if isinstance(v, float) else v for v in row)
        for row in fingerprint(wh, table, day)
    ]


def main() -> None:  # noqa: C901 - one scenario, told top to bottom
    # A kill still stops dagster dev (the context manager's cleanup runs on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    parser = argparse.ArgumentParser()
    parser.add_argument("--waves", type=int, default=6)
    parser.add_argument("--per-wave", type=int, default=5)
    parser.add_argument("--wave-seconds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    home = tmp / "dagster_home"
    home.mkdir()
    from selfheal_dagster import runs

    (home / "dagster.yaml").write_text(runs.LOCAL_INSTANCE)
    from selfheal_dagster.adapters.league import League
    from selfheal_dagster.adapters.settings import DEFAULT_SEED
    from selfheal_dagster.core.dates import today_et
    from selfheal_dagster.tables import BY_NAME, TABLES, execution_order, in_phase

    today = today_et()
    league = League(DEFAULT_SEED)
    month = [today - timedelta(days=i) for i in range(DAYS)]
    box, odds = BY_NAME["bdl_player_boxscores"], BY_NAME["odds_api_game_lines"]
    game_days = [d for d in month[1:] if league.games_on(d)]
    # Two outages: the odds of a day mid-month (read only by that day's feature store) and the
    # box scores of a recent day (read by the Phase 4 of the few days after it, which the soak
    # leaves alone: they would be held by the outage).
    odds_out = game_days[len(game_days) // 2]
    box_out = next(d for d in month[2:] if league.games_on(d))
    outages = {(box.key, box_out), (odds.key, odds_out)}
    window = DAYS
    import logging

    from pytest_httpserver import HTTPServer

    from selfheal_dagster_tests.slack import FakeSlack

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per Slack request
    slack_server = HTTPServer(host="127.0.0.1", port=0)
    slack_server.start()
    slack = FakeSlack()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))}
    env.update(
        SLACK_BOT_TOKEN="xoxb-soak-not-a-secret",
        SLACK_CHANNEL="#nba-alerts",
        SELFHEAL_SLACK_API_URL=slack.install(slack_server),
        DAGSTER_HOME=str(home),
        SELFHEAL_DUCKDB_PATH=str(tmp / "warehouse.duckdb"),
        SELFHEAL_LEAGUE_OUTAGES=f"{box.name}@{box_out},{odds.name}@{odds_out}",
        SELFHEAL_SWEEP_INTERVAL_SECONDS="20",
        SELFHEAL_SWEEP_PHASE2_DAYS=str(window),
        SELFHEAL_SWEEP_PHASE4_DAYS=str(DAYS),
        SELFHEAL_HEAL_INTERVAL_SECONDS="10",
        SELFHEAL_HEAL_BACKOFF_SECONDS=str(BACKOFF),
    )
    os.environ.update(env)

    from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse

    print(f"soak in {tmp}: month {month[-1]} .. {today}, outages {sorted(outages)}")
    wh = DuckDBWarehouse(tmp / "warehouse.duckdb")
    start = today - timedelta(days=DAYS + 45)
    day = start
    while day < today:
        for t in in_phase(2):
            wh.replace_partition(t, day, league.feed(t.name, day))
        day += timedelta(days=1)
    for t in (BY_NAME["nbac_schedule"], odds):
        wh.replace_partition(t, today, league.feed(t.name, today))
    for t in execution_order(in_phase(4)):
        wh.run_processor(t, sorted(month))  # one statement per table for the month
    shutil.copy(tmp / "warehouse.duckdb", tmp / "truth.duckdb")
    truth = DuckDBWarehouse(tmp / "truth.duckdb")
    for asset, day in outages:
        wh.punch_gap(BY_NAME[asset.split("/")[1]], day)
    print("warehouse and truth built")

    import dagster as dg

    from selfheal_dagster.core import names
    from selfheal_dagster.core.history import Outcome
    from selfheal_dagster.instance.heal_loop import run_days
    from selfheal_dagster_tests.daemon import dagster_dev_running, heal_runs

    # Where faults may go: not the outages, nor what reads them (it would be held by them).
    readers_of_box_out = {box_out + timedelta(days=k) for k in range(1, 31)}
    candidates = [
        (t, d)
        for t in TABLES
        # Not what is not due yet: Phase 4 of today (due at noon), Phase 2 of yesterday.
        for d in (month[1:] if t.phase == 4 else month[2:])
        if (t.key, d) not in outages
        and not (t.phase == 4 and d in readers_of_box_out)
        and not (t.name == "ml_feature_store_v2" and d == odds_out)
    ]
    faults: list[tuple] = []  # (table, day, kind, injected_at, rows_before, rows_after)
    instance = dg.DagsterInstance.get()
    t_start = time.time()
    with dagster_dev_running(env, tmp / "dagster_dev.log"):
        print(f"dagster dev up after {time.time() - t_start:.0f}s; injecting faults")
        for wave in range(args.waves):
            for _ in range(args.per_wave):
                table, day = rng.choice(candidates)
                kind = rng.choice(KINDS)
                if kind.startswith("x"):  # a load repeated: doubled or tripled
                    before, after = wh.multiply(table, day, int(kind[1:]))
                else:
                    keep = 0.0 if kind == "delete" else float(kind.split()[1])
                    before, after = wh.punch_gap(table, day, keep)
                faults.append((table, day, kind, time.time(), before, after))
            print(f"wave {wave + 1}: {len(faults)} faults so far")
            time.sleep(args.wave_seconds)

        in_flight = [
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED,
        ]

        def quiet() -> bool:
            records = wh.history(limit=5000)
            gave_up = {
                (r.assets[0], r.target_date) for r in records if r.outcome is Outcome.GAVE_UP
            }
            running = instance.get_runs(dg.RunsFilter(job_name="heal_job", statuses=in_flight))
            settled = all(fingerprint(wh, t, d) == fingerprint(truth, t, d) for t, d, *_ in faults)
            open_ = [r for r in records if r.outcome is Outcome.TRIGGERED]
            return settled and not open_ and not running and outages <= gave_up

        deadline, said = time.time() + 1800, 0.0
        while time.time() < deadline and not quiet():
            if time.time() - said > 60:
                said = time.time()
                running = instance.get_runs(dg.RunsFilter(job_name="heal_job", statuses=in_flight))
                print(f"waiting for quiet: {len(running)} heal run(s) queued or running")
            time.sleep(10)
        time.sleep(60)  # a few more sweeps and ticks: nothing new may start

    real = [f for f in faults if f[4] != f[5]]
    noop = [f for f in faults if f[4] == f[5]]
    heal = list(instance.get_runs(dg.RunsFilter(job_name="heal_job")))
    records = wh.history(limit=5000)
    spans = []
    for run in heal:
        rec = instance.get_run_record_by_id(run.run_id)
        writes = {(k.to_user_string(), d) for d in run_days(run) for k in run.asset_selection or ()}
        named = [n for n in run.tags.get(names.FAILED, "").split(",") if n]
        failed = {(n, run.tags[names.TARGET_DATE]) for n in named}
        begin = rec.start_time or rec.create_timestamp.timestamp()
        spans.append((run, writes, failed, begin, rec.end_time or time.time()))
    concurrent = sum(
        1
        for i, a in enumerate(spans)
        for b in spans[i + 1 :]
        if a[1] & b[1] and not (a[4] <= b[3] or b[4] <= a[3])
    )
    from selfheal_dagster.core.checks import read_partitions

    def inputs(table, day) -> set:
        """The partitions ``table`` for ``day`` reads, directly or through another table."""
        out, todo = set(), [(table, day)]
        while todo:
            for up in read_partitions(*todo.pop()):
                if (up[0].key, up[1]) not in out:
                    out.add((up[0].key, up[1]))
                    todo.append(up)
        return out

    detected, exact, times, redundant = 0, 0, [], 0
    doubled = {"all": 0, "detected": 0, "exact": 0}
    for table, day, kind, at, *_ in real:
        # A later fault on the partition or on what it reads is a new reason to heal it.
        touching = {(table.key, day)} | inputs(table, day)
        until = min(
            (g[3] for g in faults if g[3] > at and (g[0].key, g[1]) in touching),
            default=float("inf"),
        )
        mine = [s for s in spans if (table.key, day) in s[1] and s[4] >= at]
        is_exact = fingerprint(wh, table, day) == fingerprint(truth, table, day)
        detected += bool(mine)
        exact += is_exact
        if kind.startswith("x"):
            doubled["all"] += 1
            doubled["detected"] += bool(mine)
            doubled["exact"] += is_exact
        ok = sorted(s[4] for s in mine if s[0].is_success)
        if ok:
            times.append(ok[0] - at)
        targeted = [
            s
            for s in mine
            if s[0].is_success and (table.name, day.isoformat()) in s[2] and s[3] < until
        ]
        if len(targeted) > 1:
            redundant += len(targeted) - 1
            keys = [s[0].tags.get("dagster/run_key") for s in targeted]
            print(f"redundant? {table.name} {day}: {keys}")
    touched = {(t.key, d) for t, d, *_ in real} | {(a, d) for a, d in outages}

    readers: set = set()  # what reads a fault, directly or through another reader
    dates = [today - timedelta(days=i) for i in range(DAYS + 45)]
    grew = True
    while grew:
        grew = False
        for t in TABLES:
            for d in dates:
                reads = {(u.key, ud) for u, ud in read_partitions(t, d)}
                if (t.key, d) not in readers and reads & (touched | readers):
                    readers.add((t.key, d))
                    grew = True
    false = [
        r
        for r in records
        if r.healing_result.triggered
        and not any(((a, r.target_date) in touched | readers) for a in r.assets)
    ]
    false += [
        r
        for r in records
        if r.outcome is Outcome.GAVE_UP and (r.assets[0], r.target_date) not in outages
    ]
    open_ = [r for r in records if r.outcome is Outcome.TRIGGERED]
    for r in false:
        print(f"false alert? {r.id} {r.outcome} {r.assets}: {r.healing_result.reason[:120]}")
    print()
    print(
        f"faults: {len(faults)} injected, {len(real)} changed rows, "
        f"{len(noop)} on no-game days (no rows to lose)"
    )
    print(f"detected: {detected}/{len(real)} = {100 * detected / max(1, len(real)):.0f}%")
    print(f"healed to exact rows: {exact}/{len(real)} = {100 * exact / max(1, len(real)):.0f}%")
    n = max(1, doubled["all"])
    print(
        f"doubled or tripled loads: {doubled['all']}; detected {doubled['detected']} "
        f"({100 * doubled['detected'] / n:.0f}%), healed to exact rows {doubled['exact']} "
        f"({100 * doubled['exact'] / n:.0f}%)"
    )
    held = {(box.key, box_out), (odds.key, odds_out)} | {
        (t.key, d) for t in in_phase(4) for d in month if d in readers_of_box_out
    }
    held |= {(BY_NAME["ml_feature_store_v2"].key, odds_out)}
    differ = [
        (t.name, d)
        for t in in_phase(4)
        for d in month
        if (t.key, d) not in held and rounded(wh, t, d) != rounded(truth, t, d)
    ]
    print(f"Phase 4 partitions that differ from the truth at the end: {len(differ)} {differ[:5]}")
    print(f"heal runs: {len(heal)}; concurrent pairs: {concurrent}; redundant: {redundant}")
    print(f"history records: {len(records)}; open: {len(open_)}; false alerts: {len(false)}")
    for asset, day in sorted(outages):
        attempts = [
            r
            for r in heal_runs(instance, day)
            if asset in {k.to_user_string() for k in r.asset_selection or ()}
        ]
        gave = [
            r
            for r in records
            if r.outcome is Outcome.GAVE_UP and (r.assets[0], r.target_date) == (asset, day)
        ]
        print(f"outage {asset} {day}: {len(attempts)} attempts, {len(gave)} gave up")
    if times:
        print(f"time to heal: median {statistics.median(times):.0f}s, max {max(times):.0f}s")
    report_incidents(records, real, len(heal))
    report_alerts(slack, records, len(outages))
    slack_server.stop()
    print(f"total {time.time() - t_start:.0f}s; logs in {tmp}")


def report_incidents(records, real: list, heal_runs: int) -> None:
    """Incidents and heal runs per fault, and how each incident closed (its parent's last
    status): a "failed" closing of an incident whose every record ended healed, superseded
    or skipped (nothing of it failed) is a closing that does not tell the truth. Faults one
    incident repaired together are listed ("clustered")."""
    faults = len(real)
    from collections import Counter

    from selfheal_dagster.core.history import Outcome
    from selfheal_dagster.core.incidents import Incident

    by_cid: dict[str, list] = {}
    for r in records:
        by_cid.setdefault(r.correlation_id, []).append(r)
    kinds: Counter = Counter()
    untrue = []
    for cid, mine in by_cid.items():
        incident = Incident.of(cid, mine)
        status, kind = incident.status(3)
        kinds[kind] += 1
        failed = [r for r in mine if r.outcome in (Outcome.FAILED, Outcome.GAVE_UP)]
        if kind == "failed" and not failed:
            untrue.append(cid[:8])
            print(f"untrue closing? {cid[:8]}: {status}")
        repaired = {(name, r.target_date) for r in mine for name in r.missing_components}
        together = sorted(f"{t.name} {d}" for t, d, *_ in real if (t.name, d) in repaired)
        if len(together) > 1:
            print(f"clustered in {cid[:8]}: {', '.join(together)}")
    print(
        f"incidents: {len(by_cid)} for {faults} faults ({len(by_cid) / max(1, faults):.2f} per "
        f"fault); heal runs per fault {heal_runs / max(1, faults):.2f}; closings: "
        + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        + f"; 'failed' closings with nothing failed: {len(untrue)}"
    )


def report_alerts(slack, records, outages: int) -> None:
    """What the channel saw: the targets are at most one top-level message per incident
    plus one per give-up, no message of its own for a skipped or held refresh, pages =
    outages, and every page naming what it holds."""
    incidents = {r.correlation_id for r in records}
    posted = [c for c in slack.calls if c.method == "chat.postMessage"]
    top = slack.top_level
    pages = [c for c in top if c.title.startswith("🚨")]
    replies = [c for c in posted if c.thread_ts]
    edits = [c for c in slack.calls if c.method == "chat.update"]
    own = [c for c in posted if c.title.startswith(("⏭️", "⏸️")) or "Skipped" in c.title]
    naming = [p for p in pages if "held (reads it, not refreshed)" in p.body]
    print(
        f"alerts: {len(incidents)} incidents; {len(posted)} messages "
        f"({len(posted) / max(1, len(incidents)):.1f} per incident): {len(top)} top-level, "
        f"{len(replies)} thread replies, {len(pages)} pages; {len(edits)} status edits"
    )
    print(
        f"alerts targets: top-level {len(top)} <= incidents + pages {len(incidents) + len(pages)}"
        f": {'yes' if len(top) <= len(incidents) + len(pages) else 'NO'}; messages for skipped"
        f" or held refreshes: {len(own)}; pages {len(pages)} = outages {outages}: "
        f"{'yes' if len(pages) == outages else 'NO'}; pages naming what they hold: "
        f"{len(naming)}/{len(pages)}"
    )


if __name__ == "__main__":
    main()
