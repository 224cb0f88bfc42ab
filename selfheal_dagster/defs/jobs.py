"""Jobs people launch and backfill: every table of a game date, Phase 2 before Phase 4."""

import dagster as dg

from selfheal_dagster.core.names import DAILY_JOB
from selfheal_dagster.tables import PHASE_GROUPS

daily_job = dg.define_asset_job(
    DAILY_JOB,
    selection=dg.AssetSelection.groups(*PHASE_GROUPS.values()),
    description="Load and compute every table for one game date (or a backfilled range).",
)

defs = dg.Definitions(jobs=[daily_job])
