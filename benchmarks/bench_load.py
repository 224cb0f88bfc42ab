"""What loading the code location costs, as ratios to `import dagster` in the same run.

Every run process and every code-server (re)load pays this. Each figure is the median of
several fresh interpreter processes. The last line shows what `dg.load_from_defs_folder` would
add on top: it imports every installed dg plugin's component registry (dagster-gcp's pulls in
the BigQuery client), which is why definitions.py merges the defs modules itself.

    python benchmarks/bench_load.py
"""

import statistics
import subprocess
import sys

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


def main() -> None:
    medians = {
        name: statistics.median(timed(code) for _ in range(REPEATS))
        for name, code in SNIPPETS.items()
    }
    base = medians["import dagster"]
    print(f"{'what':58} {'median s':>9} {'x dagster':>10}")
    for name, seconds in medians.items():
        print(f"{name:58} {seconds:9.2f} {seconds / base:10.2f}")


if __name__ == "__main__":
    main()
