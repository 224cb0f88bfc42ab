"""What loading the code location costs, as ratios to `import dagster` in the same run.

Every run process and every code-server (re)load pays this. Each figure is the median of
several fresh interpreter processes. The last line shows what `dg.load_from_defs_folder` would
add on top: it imports every installed dg plugin's component registry (dagster-gcp's pulls in
the BigQuery client), which is why definitions.py merges the defs modules itself.

Then whole commands, wall time from the shell, as ratios to a process that only imports
dagster: the project's own load (``dagster definitions validate``) beside ``dg check defs``
and ``dg list defs``, which read the project from ``[tool.dg]`` in pyproject.toml; and two
``selfheal`` commands that only read the warehouse (on an empty one), which open it without
importing Dagster (``adapters/connect.py``).

    python benchmarks/bench_load.py
"""

import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 5

SNIPPETS = {
    "import dagster": "import dagster",
    "import + load definitions": (
        "import dagster\nfrom selfheal_dagster.definitions import defs\ndefs()"
    ),
    "import + dg plugin registry (load_from_defs_folder extra)": (
        "import dagster\n"
        "from dagster.components.core.load_defs import get_library_json_enriched_defs\n"
        "get_library_json_enriched_defs(None)"
    ),
}


def timed(code: str) -> float:
    probe = f"import time\n_t = time.perf_counter()\n{code}\nprint(time.perf_counter() - _t)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMMANDS = {
    "python -c 'import dagster'": [sys.executable, "-c", "import dagster"],
    "dagster definitions validate -m …definitions": [
        str(BIN / "dagster"),
        "definitions",
        "validate",
        "-m",
        "selfheal_dagster.definitions",
    ],
    "dg check defs": [str(BIN / "dg"), "check", "defs"],
    "dg list defs --json": [str(BIN / "dg"), "list", "defs", "--json"],
    "selfheal status --start … --end … (2 dates)": [
        str(BIN / "selfheal"),
        "status",
        "--start",
        "2026-01-19",
        "--end",
        "2026-01-20",
    ],
    "selfheal history": [str(BIN / "selfheal"), "history"],
}
SCRATCH = tempfile.mkdtemp(prefix="bench_load_")  # the selfheal commands' empty warehouse
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


def wall(command: list[str]) -> float:
    """Wall time of ``command`` on the local default (the shell's SELFHEAL_ and SLACK_
    settings left out: a production setting would send the selfheal rows to BigQuery)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "SLACK_"))}
    env.update(VIRTUAL_ENV=str(BIN.parent), SELFHEAL_DUCKDB_PATH=f"{SCRATCH}/warehouse.duckdb")
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def commands() -> None:
    medians = {
        name: statistics.median(wall(command) for _ in range(REPEATS))
        for name, command in COMMANDS.items()
        if Path(command[0]).exists()
    }
    base = medians["python -c 'import dagster'"]
    print(f"\n{'command (wall time)':58} {'median s':>9} {'x import':>10}")
    for name, seconds in medians.items():
        print(f"{name:58} {seconds:9.2f} {seconds / base:10.2f}")


def main() -> None:
    medians = {
        name: statistics.median(timed(code) for _ in range(REPEATS))
        for name, code in SNIPPETS.items()
    }
    base = medians["import dagster"]
    print(f"{'what':58} {'median s':>9} {'x dagster':>10}")
    for name, seconds in medians.items():
        print(f"{name:58} {seconds:9.2f} {seconds / base:10.2f}")
    commands()


if __name__ == "__main__":
    main()
