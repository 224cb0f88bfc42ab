"""The pure core: plain functions over plain data (planning, heal decisions, checks, the heal
history, incidents and their messages, dates and the season calendar). Nothing here touches
Dagster, a warehouse, the network, the clock's side effects or the environment; it imports
only the registry and other core modules."""
