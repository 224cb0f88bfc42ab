"""Runs of the code location executed in this process, carrying the location's origin.

Private Dagster API, on purpose: Dagster 1.13 has no public way to create a run with a code
location origin and execute it in the current process. ``execute_in_process`` (public) makes
runs with no origin, so the UI's job, timeline and sensor views omit them; the run launcher
(public) starts a new process per run, which costs an import of the code location (seconds) and
hides each step's end from the CLI. Every private name this needs is imported here, and
``selfheal_dagster_tests/unit/test_private_api.py`` fails loudly on a Dagster upgrade that moves or
changes one of them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from functools import cache

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.repository_definition.valid_definitions import (
    SINGLETON_REPOSITORY_NAME,
)
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}  # the default config
LOCATION = "selfheal_dagster"  # the name workspace.yaml and [tool.dagster] give the location
DEFS_MODULE = "selfheal_dagster.definitions"


@cache
def _origins(job_name: str) -> tuple[object, object]:
    """The job's origin in the code location ``dagster dev`` and the daemon load: a run that
    carries it is listed under its job, in the timeline and in the sensors' run tabs, and can
    be re-executed from the UI, like a run the UI or the daemon launched."""
    cwd = os.getcwd()
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable, module_name=DEFS_MODULE, working_directory=cwd
        ),
        location_name=LOCATION,
    )
    remote = RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME).get_job_origin(job_name)
    python = ReconstructableRepository.for_module(DEFS_MODULE, "defs", cwd).get_python_origin()
    return remote, python.get_job_origin(job_name)


def execute(
    job: dg.JobDefinition,
    dagster_instance: dg.DagsterInstance,
    *,
    tags: Mapping[str, str],
    asset_selection: Iterable[dg.AssetKey] | None = None,
    run_config: Mapping[str, object] | None = None,
):
    """Create a run of ``job`` with the code location's origin and execute it in this process
    (as a run worker would); the run's partition comes from ``tags``, its console logs are
    quiet unless ``run_config`` says otherwise.

    Why not ``execute_in_process``: its runs have no origin, so the UI's job and sensor views
    omit them. Why not the run launcher: a new process per run costs an import of the code
    location (seconds), and the CLI reports each run's steps as they end.
    """
    selection = frozenset(asset_selection) if asset_selection else None
    subset = job.get_subset(asset_selection=selection) if selection else job
    config = dict(run_config if run_config is not None else QUIET)
    remote, python = _origins(job.name)
    plan = create_execution_plan(
        InMemoryJob(subset),
        run_config=config,
        instance_ref=dagster_instance.get_ref() if dagster_instance.is_persistent else None,
        tags=dict(tags),
    )
    run = dagster_instance.create_run_for_job(
        job_def=subset,
        execution_plan=plan,
        run_config=config,
        tags={**job.run_tags, **tags},
        asset_selection=selection,
        remote_job_origin=remote,
        job_code_origin=python,
    )
    return execute_run(InMemoryJob(subset), run, dagster_instance)
