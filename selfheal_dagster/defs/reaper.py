"""The run reaper: fails runs whose worker process is gone (see ``instance/orphans.py``).

Without it, a ``kill -9`` of ``dagster dev`` or of ``selfheal backfill`` leaves runs STARTED
forever: the sweep skips every tick ("still in flight"), the heal loop and ``selfheal heal``
refuse the partitions those runs write. Failed here, each such run ends like any failed run:
the outcome sensors close its heal records and the heal loop retries it as an attempt.
"""

import dagster as dg

from selfheal_dagster.core.names import RUN_REAPER
from selfheal_dagster.instance import orphans

INTERVAL_SECONDS = 30


@dg.sensor(
    name=RUN_REAPER,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Fail STARTED runs whose run worker process is gone from this machine (a killed "
        "dagster dev or CLI), so nothing waits on them; Dagster's run monitoring does not do "
        "this for the default run launcher."
    ),
)
def run_reaper(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    lines = orphans.fail(context.instance, orphans.find(context.instance))
    for line in lines:
        context.log.warning(line)
    return dg.SkipReason("; ".join(lines) if lines else "no orphaned runs")


defs = dg.Definitions(sensors=[run_reaper])
