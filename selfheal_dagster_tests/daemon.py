"""Driving the real daemon in tests and benchmarks: ``dagster dev`` on a free loopback port,
always stopped, and bounded waits on what it does."""

import contextlib
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

from selfheal_dagster.core import healing
from selfheal_dagster_tests.conftest import bound

ROOT = Path(__file__).resolve().parents[1]


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
            dg.RunsFilter(job_name="heal_job", tags={healing.TARGET_DATE: day.isoformat()})
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


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
