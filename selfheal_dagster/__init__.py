"""selfheal_dagster: a Dagster code location that keeps the basketball-props warehouse whole."""
