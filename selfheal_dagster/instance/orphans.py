"""Runs whose process is gone: found and failed, so nothing waits on them forever.

Dagster's run monitoring fails a run stuck STARTING, but with the default run launcher (local
``dagster dev``, and the CLI's in-process runs) it never fails a STARTED run whose worker
died: ``kill -9`` of ``dagster dev`` or of ``selfheal backfill`` leaves the run STARTED in the
instance forever, and every guard that waits for runs in flight (the sweep's one-at-a-time,
the heal loop's claims, ``selfheal heal``) waits with it.

Every run's RUN_START event carries the process id of its worker. A run is orphaned when
that process no longer exists on this machine, or the pid now belongs to a process started
after the run (the pid was reused). Only runs whose worker ran on this host are judged, so
this is for the default launcher; a launcher whose workers run elsewhere (Kubernetes, ECS)
has Dagster's own worker health checks in run monitoring.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from selfheal_dagster.core.names import HOST_TAG

# A run is judged only once it has been STARTED this long: its worker has had time to log.
GRACE_SECONDS = 20.0


@dataclass(frozen=True)
class Orphan:
    run_id: str
    job_name: str
    pid: int
    why: str


def process_started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), None if it does not exist.

    Linux: from /proc (start time in clock ticks after boot). Elsewhere only existence is
    known, reported as "started at the epoch" so the pid-reuse test never fires.
    """
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.exists() and Path("/proc/self/stat").exists():
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
        if fields[0] == "Z":  # a zombie: exited, not yet reaped by its parent
            return None
        ticks = int(fields[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0.0
    return 0.0


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that ran the run (its RUN_START event's)."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_START, limit=1
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid:
            return int(event.pid)
    return None


def judges(instance: dg.DagsterInstance) -> bool:
    """Whether this instance's runs have their workers on this machine: the default run
    launcher starts them as local processes (``dagster dev``, a single-machine deployment)."""
    return isinstance(instance.run_launcher, dg.DefaultRunLauncher)


def find(instance: dg.DagsterInstance, now: datetime | None = None) -> list[Orphan]:
    """STARTED runs on this host whose worker process is gone."""
    now = now or datetime.now(UTC)
    if not judges(instance):
        return []
    found = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        run = record.dagster_run
        started = record.start_time
        if started is None or now.timestamp() - started < GRACE_SECONDS:
            continue
        host = run.tags.get(HOST_TAG)
        if host is not None and host != socket.gethostname():
            continue
        pid = worker_pid(instance, run.run_id)
        if pid is None:
            continue
        at = process_started_at(pid)
        if at is None:
            why = f"its run worker (pid {pid}) is gone"
        elif at > started + 1:
            why = f"its run worker (pid {pid}) is gone (the pid now belongs to another process)"
        else:
            continue
        found.append(Orphan(run.run_id, run.job_name, pid, why))
    return found


def fail(instance: dg.DagsterInstance, orphans: Iterable[Orphan]) -> list[str]:
    """Mark each orphan failed (RUN_FAILURE, so run-failure sensors see it); one line each."""
    lines = []
    for orphan in orphans:
        run = instance.get_run_by_id(orphan.run_id)
        if run is None or run.status != dg.DagsterRunStatus.STARTED:
            continue
        message = f"failed by selfheal: {orphan.why}"
        instance.report_run_failed(run, message=message)
        lines.append(f"run {orphan.run_id} ({orphan.job_name}): {message}")
    return lines
