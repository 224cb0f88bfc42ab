"""The names the product gives its jobs, sensors and run tags, each written once."""

# Jobs
DAILY_JOB = "daily_job"  # defs/jobs.py: every table of a date (or a backfilled range)
HEAL_JOB = "heal_job"  # defs/heal.py: the heal sensor's runs
SWEEP_JOB = "sweep_job"  # defs/sweep.py: every check over the watch window (or given dates)
METRICS_JOB = "heal_metrics_job"  # defs/metrics.py: a day's heal figures
# Jobs that write no table: the sweep (and a person's re-check of dates), the heal figures.
WRITE_NO_TABLE = frozenset({SWEEP_JOB, METRICS_JOB})

# Sensors
HEAL_SENSOR = "heal_sensor"
SWEEP_SENSOR = "sweep_sensor"
ALERTS_SENSOR = "alerts_sensor"
RUN_REAPER = "run_reaper"
OUTCOME_SENSORS = {  # one per way a heal run ends, by run status
    "SUCCESS": "heal_outcome_success",
    "FAILURE": "heal_outcome_failure",
    "CANCELED": "heal_outcome_canceled",
}

# Run tags: what every heal run says of itself.
CORRELATION_ID = "selfheal/correlation_id"
ATTEMPT = "selfheal/attempt"
PHASE = "selfheal/phase"  # also on every table's asset: its phase
TARGET_DATE = "selfheal/target_date"
TARGET_LAST = "selfheal/target_last"  # a ranged heal run: its last date
RUN_KEY = "selfheal/run_key"
FAILED = "selfheal/failed"
DETECTED_AT = "selfheal/detected_at"
OUTCOME_TAG = "selfheal/outcome"
REASON_TAG = "selfheal/outcome_reason"
# Other runs' tags.
BACKFILL = "selfheal/backfill"  # "YYYY-MM-DD..YYYY-MM-DD": a manual backfill's whole range
BACKFILL_STEP = "selfheal/backfill_step"  # "k/n": this run is the k-th of the backfill's n
SWEEP_TAG = "selfheal/sweep"  # a sweep run
HOST_TAG = "selfheal/host"  # set on CLI runs; daemon runs are judged by their worker's pid
DAGSTER_RUN_KEY = "dagster/run_key"
