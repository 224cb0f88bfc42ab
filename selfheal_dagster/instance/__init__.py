"""What reads and writes the Dagster instance: the heal loop's gather and apply, check
records, orphaned runs, and the private Dagster API they need (each use says why). They may
use the core, the adapters and the registry; never the definitions."""
