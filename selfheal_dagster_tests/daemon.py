"""Driving the real daemon in tests and benchmarks: ``dagster dev`` on a free loopback port,
always stopped, and bounded waits on what it does."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg

from selfheal_dagster.core import names
from selfheal_dagster_tests.support import ROOT, bound


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, predicate, timeout: float, interval: float = 2.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def heal_runs(instance: dg.DagsterInstance, day: date) -> list[dg.DagsterRun]:
    return list(
        instance.get_runs(
            dg.RunsFilter(job_name="heal_job", tags={names.TARGET_DATE: day.isoformat()})
        )
    )


@dataclass
class DagsterDev:
    port: int
    pid: int  # also its process group: webserver, daemon, code server and run workers

    def kill(self) -> None:
        """What a crash does: SIGKILL to the whole process group, no cleanup."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


@contextmanager
def dagster_dev_running(
    env: dict[str, str], log_path: Path, dg_cli: bool = False
) -> Iterator[DagsterDev]:
    """``dagster dev`` (webserver and daemon) on a free loopback port, always stopped;
    ``dg_cli``: ``dg dev`` instead, reading the project from pyproject.toml."""
    port = free_port()
    log = open(log_path, "a")  # noqa: SIM115
    if dg_cli:
        command = [str(Path(sys.executable).parent / "dg"), "dev", "--host", "127.0.0.1"]
        command += ["--port", str(port)]
    else:
        command = [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml")]
        command += ["-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            "the webserver",
            lambda: _up(f"http://127.0.0.1:{port}/server_info"),
            timeout=bound(240),
        )
        yield DagsterDev(port, proc.pid)
    except BaseException:
        # What the daemon did, in the failure's captured output: a timeout on a loaded CI
        # machine is otherwise a message with nothing to go on.
        print(run_timeline(env["DAGSTER_HOME"]))
        log.flush()
        print("".join(log_path.read_text(errors="replace").splitlines(True)[-40:]))
        raise
    finally:
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        log.close()


def run_timeline(home: str) -> str:
    """Every run of the instance: created, started and ended (seconds after the first was
    created), job, status, target date and assets."""
    try:
        with dg.DagsterInstance.from_config(home) as instance:
            records = sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)
    except Exception as error:  # noqa: BLE001 — a diagnostic must not hide the failure
        return f"no run timeline: {error}"
    if not records:
        return "no runs"
    t0 = records[0].create_timestamp.timestamp()

    def at(t: float | None) -> str:
        return f"{t - t0:7.1f}" if t else "      -"

    lines = ["created started   ended  job / status / date / assets"]
    for r in records:
        run = r.dagster_run
        assets = [k.to_user_string() for k in run.asset_selection or ()]
        lines.append(
            f"{at(r.create_timestamp.timestamp())} {at(r.start_time)} {at(r.end_time)}  "
            f"{run.job_name} {run.status.value} {run.tags.get(names.TARGET_DATE, '')} {assets}"
        )
    return "\n".join(lines)


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """One request to the webserver's GraphQL API, as the UI makes it."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        found = json.load(response)
    assert "errors" not in found, found["errors"]
    return found["data"]


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def launch_run(port: int, tables, day: date, tags: dict[str, str] | None = None) -> str:
    """A run of ``tables`` for ``day`` launched as the UI launches one; its run id."""
    params = {
        "selector": {
            "repositoryLocationName": "selfheal_dagster",
            "repositoryName": "__repository__",
            "jobName": "heal_job",
            "assetSelection": [{"path": list(t.key_path)} for t in tables],
        },
        "executionMetadata": {
            "tags": [
                {"key": k, "value": v}
                for k, v in {"dagster/partition": day.isoformat(), **(tags or {})}.items()
            ]
        },
        "mode": "default",
    }
    found = graphql(port, LAUNCH, {"params": params})["launchRun"]
    assert found["__typename"] == "LaunchRunSuccess", found
    return found["run"]["runId"]


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
