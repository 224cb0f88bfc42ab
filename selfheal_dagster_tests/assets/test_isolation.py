"""Dagster's process-global load state never outlives the instance it was made under."""

import gc

import dagster as dg
from dagster._core.storage.defs_state.base import DefsStateStorage

from selfheal_dagster.defs.resources import initialized


def test_resources_initialised_under_a_closed_instance_leave_no_dead_state_behind(env):
    from selfheal_dagster.definitions import defs as load

    defs = load()
    with dg.instance_for_test():
        resources = initialized({"warehouse": defs.resources["warehouse"]})
        assert resources["warehouse"].open() is not None
    del resources
    gc.collect()  # finalises whatever init context the resources left behind
    assert DefsStateStorage.get() is None
    # What failed at random before: resolving a job once the load context is rebuilt.
    assert load().resolve_job_def("sweep_job").name == "sweep_job"
