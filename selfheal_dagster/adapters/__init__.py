"""Adapters to the world outside Dagster: the warehouses (DuckDB, BigQuery), the platform's
services, Slack, the simulated league, and the environment (settings). They may use the core
and the registry; never the Dagster instance code or the definitions."""
