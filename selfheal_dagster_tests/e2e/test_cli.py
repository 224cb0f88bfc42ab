"""The ``selfheal`` command run as a real process: exit codes, one-line errors, the demo."""

import os
import subprocess
import sys
from datetime import date, timedelta

import pytest

from selfheal_dagster.adapters.warehouse.duckdb import DuckDBWarehouse
from selfheal_dagster.tables import TABLES, execution_order, in_phase
from selfheal_dagster_tests.support import ROOT, bound, selfheal


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["gap", "--table", "bdl_player_boxscores", "--date", "2026-13-45"], "2026-13-45"),
        (["gap", "--table", "bdl_player_boxscores", "--date", "20-01-2026"], "20-01-2026"),
        (["gap", "--table", "box_scores", "--date", "2026-01-20"], "unknown table 'box_scores'"),
        (["backfill", "--start", "2019-01-01", "--end", "2019-01-02"], "out of range"),
        (["backfill", "--start", "2026-01-20", "--end", "2026-01-19"], "before --start"),
        (["backfill", "--start", "2026-01-20", "--end", "2026-01-20", "--select", "nope"], "nope"),
        (["gap", "--table", "nbac_schedule", "--date", "2026-01-20", "--keep", "1.5"], "--keep"),
        (["gap", "--table", "nbac_schedule", "--date", "2026-01-20", "--keep", "nan"], "'nan'"),
        (["gap", "--table", "nbac_schedule", "--date", "2026-01-20", "--keep", "inf"], "'inf'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, needle):
    out = selfheal(tmp_path, *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert needle in lines[0] and "Traceback" not in out.stderr


def test_bad_environment_is_one_line_and_exit_code_2(tmp_path):
    out = selfheal(
        tmp_path,
        "status",
        "--start",
        "2026-01-20",
        "--end",
        "2026-01-20",
        extra_env={"SELFHEAL_ENV": "staging"},
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: SELFHEAL_ENV='staging' is not valid: expected local or prod"
    ]


@pytest.mark.parametrize(
    ("setting", "value", "needle"),
    [
        ("SELFHEAL_DUCKDB_PATH", "/proc/nope/w.duckdb", "cannot create it under /proc"),
        ("SELFHEAL_DUCKDB_PATH", "/", "is a directory"),
        ("SLACK_WEBHOOK_URL", "hooks.slack.com/services/T0/B0/x", "not an http(s) URL"),
        ("SLACK_WEBHOOK_URL", "https://", "not an http(s) URL"),
        ("SELFHEAL_UI_URL", "ftp://dagster.internal", "not an http(s) URL"),
        ("SELFHEAL_UI_URL", "http://dagster.internal:99999", "invalid port"),
        ("SELFHEAL_SWEEP_PHASE2_DAYS", "-1", "expected >= 0"),
        ("SELFHEAL_HEAL_BACKOFF_SECONDS", "-5", "expected >= 0"),
        ("SELFHEAL_HEAL_MAX_ATTEMPTS", "0", "expected >= 1"),
        ("SELFHEAL_LEAGUE_SLOW", "bdl_player_boxscores@2026-01-20:forever", "slow delivery"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        ["check", "--date", "2026-01-20"],
        ["backfill", "--start", "2026-01-19", "--end", "2026-01-20"],
    ],
)
def test_a_bad_setting_is_one_line_exit_2_and_nothing_written(
    tmp_path, setting, value, needle, command
):
    home = tmp_path / "home"
    out = selfheal(home.parent, *command, extra_env={setting: value, "DAGSTER_HOME": str(home)})
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and setting in lines[0] and needle in lines[0], out.stderr
    assert out.stdout == ""  # no progress line, no table
    assert not home.exists()  # no instance created
    assert not (tmp_path / "warehouse.duckdb").exists()  # no warehouse created
    assert not list(tmp_path.glob(".selfheal-probe-*"))


def test_definitions_validate_says_the_bad_setting_before_any_stack_trace(tmp_path):

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))}
    env.update(SELFHEAL_SWEEP_PHASE2_DAYS="-1", DAGSTER_HOME=str(tmp_path))
    out = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "dagster"),
            "definitions",
            "validate",
            "-w",
            str(ROOT / "workspace.yaml"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in the order it was written
        text=True,
        timeout=bound(300),
    )
    assert out.returncode != 0
    text = out.stdout
    line = "selfheal_dagster cannot load: SELFHEAL_SWEEP_PHASE2_DAYS=-1: expected >= 0"
    assert line in text
    before = text[: text.index(line)]
    assert "Traceback" not in before and "Stack Trace" not in before


def test_a_correlation_id_filter_matches_a_prefix_literally(tmp_path):
    from datetime import UTC, datetime

    from selfheal_dagster.core.history import HealingResult, HealRecord

    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    for cid in ("a1b2c3d4-0000", "a1b_c3d4-0001", "ffff0000-0002"):
        wh.insert_history(
            HealRecord(
                phase="phase2",
                target_date=date(2026, 1, 20),
                missing_components=["bdl_player_boxscores"],
                healing_result=HealingResult(triggered=True, reason="missing"),
                correlation_id=cid,
                timestamp=datetime(2026, 1, 21, tzinfo=UTC),
            )
        )
    assert wh.history(correlation_id="_") == []
    assert wh.history(correlation_id="%") == []
    assert [r.correlation_id for r in wh.history(correlation_id="a1b_")] == ["a1b_c3d4-0001"]
    assert len(wh.history(correlation_id="a1b")) == 2


def test_demo_backfill_and_gap_end_to_end(tmp_path, demo):
    out = demo(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    said = out.stdout + out.stderr  # no Dagster banner nor instance warning: quiet by default
    assert "Welcome to Dagster" not in said and "Telemetry:" not in said
    assert "No dagster instance configuration" not in said
    assert "Coverage 2026-01-19 .. 2026-01-20" in out.stdout
    for table in TABLES:
        assert table.name in out.stdout
    # The story: two gaps found by the sweep, healed by the heal sensor's runs.
    assert "missing" in out.stdout and "short" in out.stdout
    assert "→ healed" in out.stdout and "0 failing check(s) left" in out.stdout
    wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    for table in TABLES:
        for day in (date(2026, 1, 19), date(2026, 1, 20)):
            assert wh.partition_stats(table, day, day)[day].rows > 0, (table.name, day)

    out = selfheal(
        tmp_path,
        "gap",
        "--table",
        "nba_raw/bdl_player_boxscores",
        "--date",
        "2026-01-20",
        "--keep",
        "0.6",
    )
    assert out.returncode == 0, out.stderr
    rows = wh.partition_stats(TABLES[1], date(2026, 1, 20), date(2026, 1, 20))[
        date(2026, 1, 20)
    ].rows
    assert f"→ {rows} rows" in out.stdout

    out = selfheal(
        tmp_path,
        "backfill",
        "--start",
        "2026-01-20",
        "--end",
        "2026-01-20",
        "--select",
        "bdl_player_boxscores",
    )
    assert out.returncode == 0, out.stderr
    assert "1/1" in out.stdout
    assert (
        wh.partition_stats(TABLES[1], date(2026, 1, 20), date(2026, 1, 20))[date(2026, 1, 20)].rows
        > rows
    )


def test_backfill_of_a_permanent_outage_exits_1_naming_the_failure(tmp_path):
    out = selfheal(
        tmp_path,
        "backfill",
        "--start",
        "2026-01-20",
        "--end",
        "2026-01-20",
        "--select",
        "bdl_player_boxscores",
        extra_env={"SELFHEAL_LEAGUE_OUTAGES": "bdl_player_boxscores@2026-01-20"},
    )
    assert out.returncode == 1
    assert "SourceOutage: simulated outage" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_ranged_backfill_is_two_runs_and_holds_only_what_reads_a_failed_date(
    tmp_path, history_file
):
    import shutil

    import dagster as dg

    shutil.copy(history_file, tmp_path / "warehouse.duckdb")
    wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    box = TABLES[1]
    first, out_day, last = date(2026, 1, 19), date(2026, 1, 19), date(2026, 1, 21)
    wh.punch_gap(box, out_day)  # gone, and the source keeps failing on it
    out = selfheal(
        tmp_path,
        "backfill",
        "--start",
        str(first),
        "--end",
        str(last),
        extra_env={"SELFHEAL_LEAGUE_OUTAGES": f"{box.name}@{out_day}"},
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert f"{box.name}: 1 of 3 dates not loaded" in out.stderr
    # Phase 4 of the first date does not read it (lookbacks end the day before): computed.
    # The two dates after it read the missing box scores: not computed, named.
    assert "not computed" in out.stderr and "incomplete:" in out.stderr
    cache = next(t for t in TABLES if t.name == "player_daily_cache")
    stats = wh.partition_stats(cache, first, last)
    assert first in stats and date(2026, 1, 20) not in stats and last not in stats
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        records = instance.get_run_records()
    assert len(records) == 2  # Phase 2 of the range, then Phase 4 of the range
    for r in records:
        assert r.dagster_run.tags["dagster/asset_partition_range_start"] == str(first)
        assert r.dagster_run.tags["dagster/asset_partition_range_end"] == str(last)


def test_check_exits_1_naming_the_gap_and_0_after_rematerialising(tmp_path, history_file):
    import json
    import shutil

    shutil.copy(history_file, tmp_path / "warehouse.duckdb")
    args = ["check", "--date", "2026-01-20", "--phase", "2", "--json"]
    out = selfheal(tmp_path, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["phase2"]["is_complete"] is True

    assert (
        selfheal(
            tmp_path, "gap", "--table", "odds_api_game_lines", "--date", "2026-01-20"
        ).returncode
        == 0
    )
    out = selfheal(tmp_path, *args)
    assert out.returncode == 1
    report = json.loads(out.stdout)["phase2"]
    assert report["missing_processors"] == ["odds_api_game_lines"]
    assert report["record_counts"]["odds_api_game_lines"] == 0
    assert report["failing_checks"][0]["status"] == "missing"

    grid = selfheal(tmp_path, "status", "--start", "2026-01-19", "--end", "2026-01-20")
    assert grid.returncode == 0 and "missing" in grid.stdout
    assert "odds_api_game_lines 2026-01-20 row_count" in grid.stdout

    out = selfheal(tmp_path, "check", "--date", "2026-01-20", "--phase", "2")
    assert out.returncode == 1 and "missing: odds_api_game_lines" in out.stdout

    fix = selfheal(
        tmp_path,
        "backfill",
        "--start",
        "2026-01-20",
        "--end",
        "2026-01-20",
        "--select",
        "odds_api_game_lines",
    )
    assert fix.returncode == 0, fix.stderr
    assert selfheal(tmp_path, *args).returncode == 0


def test_heal_dry_run_prints_the_plan_as_json_and_heal_repairs(tmp_path, history_file):
    import json
    import shutil

    shutil.copy(history_file, tmp_path / "warehouse.duckdb")
    phase4 = selfheal(
        tmp_path, "backfill", "--start", "2026-01-20", "--end", "2026-01-21", "--phase", "4"
    )
    assert phase4.returncode == 0, phase4.stderr
    selfheal(tmp_path, "gap", "--table", "bdl_player_boxscores", "--date", "2026-01-20")

    out = selfheal(tmp_path, "heal", "--date", "2026-01-20", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    # Phase 4 of 01-20 reads box scores before 01-20; Phase 4 of 01-21 reads 01-20's.
    processors = [t.key for t in execution_order(in_phase(4))]
    assert json.loads(out.stdout) == {
        "2026-01-20": ["nba_raw/bdl_player_boxscores"],
        "2026-01-21": processors,
    }
    out = selfheal(tmp_path, "heal", "--date", "2026-01-20")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(": healed") == 2
    assert selfheal(tmp_path, "check", "--date", "2026-01-20").returncode == 0
    out = selfheal(tmp_path, "heal", "--date", "2026-01-20", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == {}


def test_history_by_correlation_id_lists_alerts_runs_and_outcome(tmp_path, history_file):
    import json
    import shutil

    shutil.copy(history_file, tmp_path / "warehouse.duckdb")
    selfheal(tmp_path, "gap", "--table", "odds_api_game_lines", "--date", "2026-01-20")
    healed = selfheal(tmp_path, "heal", "--date", "2026-01-20")
    assert "🔧 Self-Heal Triggered: Phase 2" in healed.stdout  # the log sink's alert
    docs = json.loads(selfheal(tmp_path, "history", "--json").stdout)
    [record] = [r for r in docs["records"] if r["phase"] == "phase2" and r["outcome"] != "closed"]
    [closed] = [r for r in docs["records"] if r["outcome"] == "closed"]  # the incident's end
    assert closed["correlation_id"] == record["correlation_id"]
    assert record["id"] == f"2026-01-20_phase2_{record['correlation_id'][:8]}"
    assert record["outcome"] == "healed" and record["success"] is True
    assert record["missing_components"] == ["odds_api_game_lines"]
    assert docs["summary"]["healed"] >= 1

    out = selfheal(tmp_path, "history", "--correlation-id", record["correlation_id"][:8])
    assert out.returncode == 0, out.stderr
    assert record["id"] in out.stdout
    assert "open ✓ (log)" in out.stdout and "close ✓ (log)" in out.stdout
    assert record["run_ids"][0][:8] in out.stdout and "SUCCESS" in out.stdout
    assert "heal(s) triggered" in out.stdout and "median detection to healed" in out.stdout
    assert (
        "no heal records match"
        in selfheal(tmp_path, "history", "--correlation-id", "zzzzzzzz").stdout
    )


def test_a_slack_bot_without_a_channel_is_one_line(tmp_path):
    out = selfheal(tmp_path, "history", extra_env={"SLACK_BOT_TOKEN": "xoxb-not-printed"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: SLACK_CHANNEL is not set: a Slack bot needs both a token and a channel"
    ]
    assert "xoxb-not-printed" not in out.stdout + out.stderr


A, B = date(2026, 1, 10), date(2026, 1, 21)  # twelve in-season dates


def test_a_first_backfill_on_a_fresh_warehouse_loads_the_month_it_reads(tmp_path):
    out = selfheal(tmp_path, "backfill", "--start", str(A), "--end", str(B))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("also loading Phase 2 2025-12-11..2026-01-09 (")
    assert lines[0].endswith("read by Phase 4 of the range (--no-inputs refuses instead)")
    assert "108/108 partition(s) complete over 12 date(s)" in out.stdout
    # No Dagster banner, no instance warning: the empty home got the project's instance.
    assert "Welcome to Dagster" not in out.stderr + out.stdout
    assert "No dagster instance configuration" not in out.stderr + out.stdout
    assert (tmp_path / "dagster_home" / "dagster.yaml").exists()
    wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    box = next(t for t in TABLES if t.name == "bdl_player_boxscores")
    loaded = wh.partition_stats(box, date(2025, 12, 11), date(2026, 1, 9))
    from selfheal_dagster.adapters.league import League
    from selfheal_dagster.adapters.settings import DEFAULT_SEED

    league = League(DEFAULT_SEED)
    month = [date(2025, 12, 11) + timedelta(days=i) for i in range(30)]
    assert sorted(loaded) == [d for d in month if league.games_on(d)]  # every game day of it


def test_no_inputs_refuses_in_two_lines_naming_the_span_and_the_command(tmp_path):
    out = selfheal(tmp_path, "backfill", "--start", str(A), "--end", str(B), "--no-inputs")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) <= 3, out.stderr
    assert "Phase 2 2025-12-11..2026-01-09" in lines[0]
    assert "selfheal backfill --start 2025-12-11 --end 2026-01-09 --phase 2" in out.stderr
    assert not (tmp_path / "warehouse.duckdb").exists() or not DuckDBWarehouse(
        tmp_path / "warehouse.duckdb"
    ).partition_stats(TABLES[1], A, B)


def test_a_backfill_over_a_source_outage_names_that_input_and_keeps_what_reads_it(
    tmp_path, history_file
):
    import shutil

    shutil.copy(history_file, tmp_path / "warehouse.duckdb")
    wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    for table in execution_order(in_phase(4)):
        wh.run_processor(table, [A + timedelta(days=i) for i in range(12)])  # earlier rows
    box = next(t for t in TABLES if t.name == "bdl_player_boxscores")
    cache = next(t for t in TABLES if t.name == "player_daily_cache")
    out_day = date(2026, 1, 5)  # in the range's lookback, before it
    wh.punch_gap(box, out_day)
    before = wh.partition_stats(cache, A, B)
    out = selfheal(
        tmp_path,
        "backfill",
        "--start",
        str(A),
        "--end",
        str(B),
        extra_env={"SELFHEAL_LEAGUE_OUTAGES": f"{box.name}@{out_day}"},
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("✗")]
    assert errors[0].startswith(f"✗ {out_day} ") and "SourceOutage" in errors[0]
    # Every refusal names the one input, once, compactly; the partitions stay as they were.
    refused = [e for e in errors[1:] if "MissingInput" in e]
    assert refused and len(refused) == len(errors) - 1, errors
    assert all(f"{box.key}: 1 game day missing, {out_day}" in e for e in refused), errors
    after = wh.partition_stats(cache, A, B)
    # The cache reads 30 days of box scores: every date of the range reads the outage day,
    # so none is recomputed on it; each keeps its earlier rows.
    assert {d: s.loaded_at for d, s in after.items()} == {d: s.loaded_at for d, s in before.items()}
    incomplete = [line for line in out.stderr.splitlines() if line.startswith("incomplete:")]
    assert len(incomplete) <= 9  # a line per table, not per partition


def test_a_dagster_home_in_use_without_dagster_yaml_is_one_line_of_our_own(tmp_path):
    home = tmp_path / "home"
    (home / "history").mkdir(parents=True)  # someone's instance, on Dagster's defaults
    out = selfheal(
        tmp_path,
        "backfill",
        "--start",
        "2026-01-20",
        "--end",
        "2026-01-20",
        "--select",
        "nbac_schedule",
        extra_env={"DAGSTER_HOME": str(home)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines()[0] == (
        f"using the Dagster instance in {home} with Dagster's defaults (it has no dagster.yaml)"
    )
    assert "No dagster instance configuration" not in out.stderr
    assert not (home / "dagster.yaml").exists()  # left as it was


def test_the_readmes_heal_by_hand_runs_as_written(tmp_path):
    """The README's quick-start commands, read from the README and run in order on a fresh
    warehouse: each exits as its comment says (``exit 1`` where it says so, else 0)."""
    import shlex

    readme = (ROOT / "README.md").read_text()
    block = readme.split("Try a heal by hand:", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.strip().splitlines() if line.strip()]
    assert len(commands) >= 4 and all(c.startswith(".venv/bin/selfheal ") for c in commands)
    for line in commands:
        command, _, comment = line.partition("#")
        out = selfheal(tmp_path, *shlex.split(command)[1:])
        expected = 1 if "exit 1" in comment else 0
        assert out.returncode == expected, (line, out.stdout[-2000:], out.stderr[-2000:])
    assert selfheal(tmp_path, "check", "--date", "2026-01-20").returncode == 0  # healed


def test_the_commands_that_only_read_or_damage_the_warehouse_start_without_dagster(tmp_path):
    """``init``, ``gap``, ``check``, ``status`` and ``history`` open the warehouse without
    Dagster (``adapters/connect.py``): importing it was two thirds of their CPU."""
    script = (
        "import sys\n"
        "from selfheal_dagster import cli\n"
        "for line in sys.argv[1:]:\n"
        "    try:\n"
        "        cli.main(line.split())\n"
        "    except SystemExit as exc:\n"
        "        print('exit', line.split()[0], exc.code)\n"
        "print('dagster imported:', 'dagster' in sys.modules)\n"
    )
    commands = [
        "init",
        "gap --table nbac_schedule --date 2026-01-20",
        "check --date 2026-01-20 --phase 2",
        "status --start 2026-01-19 --end 2026-01-20",
        "history",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))}
    env.update(
        SELFHEAL_DUCKDB_PATH=str(tmp_path / "warehouse.duckdb"),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *commands],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=bound(120),
    )
    lines = out.stdout.splitlines()
    exits = dict(line.split()[1:] for line in lines if line.startswith("exit "))
    assert exits == {"init": "0", "gap": "0", "check": "1", "status": "0", "history": "0"}, (
        out.stdout + out.stderr
    )
    assert lines[-1] == "dagster imported: False"
