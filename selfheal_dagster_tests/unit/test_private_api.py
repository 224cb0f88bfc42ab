"""The private Dagster API the product uses, each piece where docs/architecture.md says
it is, and the exact surface it relies on: a Dagster upgrade that moves or changes one
fails here by name, before any heal does."""

import inspect
import re

import dagster as dg

from selfheal_dagster.instance import check_records, origin_runs
from selfheal_dagster_tests.support import ROOT

PRIVATE_MODULES = {
    "selfheal_dagster/instance/check_records.py",
    "selfheal_dagster/instance/origin_runs.py",
}


def parameters(function) -> set[str]:
    return set(inspect.signature(function).parameters)


def test_only_the_modules_the_readme_names_import_private_dagster_api():
    found = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "selfheal_dagster").rglob("*.py")
        if re.search(r"^\s*(from|import) dagster\._", path.read_text(), re.MULTILINE)
    }
    assert found == PRIVATE_MODULES
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    for module in PRIVATE_MODULES:
        assert module.removeprefix("selfheal_dagster/") in architecture, module


def test_running_with_a_code_location_origin_still_has_what_it_needs():
    assert {"remote_job_origin", "job_code_origin", "execution_plan", "asset_selection"} <= (
        parameters(dg.DagsterInstance.create_run_for_job)
    )
    assert {"run_config", "instance_ref", "tags"} <= parameters(origin_runs.create_execution_plan)
    assert {"job", "dagster_run", "instance"} <= parameters(origin_runs.execute_run)
    assert origin_runs.SINGLETON_REPOSITORY_NAME == "__repository__"
    # Builds every origin (LoadableTargetOrigin, the managed gRPC location, the remote
    # repository's job origin, the reconstructable repository's) the way runs get them.
    remote, python = origin_runs._origins("heal_job")
    assert remote.job_name == "heal_job" and python.job_name == "heal_job"


def test_reading_check_records_still_has_what_it_needs():
    storage = dg.DagsterInstance.ephemeral().event_log_storage
    assert {"limit", "status", "partition_filter", "cursor"} <= parameters(
        storage.get_asset_check_execution_history
    )
    assert "partition_filter" in parameters(storage.get_latest_asset_check_execution_by_key)
    assert "partitions" in parameters(storage.get_latest_storage_id_by_partition)
    status = check_records.AssetCheckExecutionRecordStatus
    assert {"PLANNED", "FAILED", "SUCCEEDED"} <= set(status.__members__)
    assert check_records.PartitionKeyFilter(key="2026-01-01").key == "2026-01-01"
    fields = {"id", "run_id", "status", "event"}
    assert fields <= set(check_records.AssetCheckExecutionRecord._fields)
    target = check_records.AssetCheckEvaluationTargetMaterializationData(
        storage_id=1, run_id="r", timestamp=1.0
    )
    assert (
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("a"),
            check_name="c",
            passed=True,
            target_materialization_data=target,
        ).target_materialization_data
        == target
    )
