"""The code location: every module under ``defs/``, merged.

``dagster dev`` (workspace.yaml), ``dagster asset materialize -m selfheal_dagster.definitions``
and the ``selfheal`` CLI all load this. Each ``defs/`` module names its definitions ``defs``:
a ``dg.Definitions``, or a ``@dg.definitions`` function; adding a module there is all it takes
to load it.

Not ``dg.load_from_defs_folder``: it also imports every installed dg plugin's component
registry, and dagster-gcp's pulls in the BigQuery client (measured 0.93 s vs 0.03 s for the
same definitions, paid by every run process and code-server load; see benchmarks/).
"""

import importlib
import pkgutil
import sys

import dagster as dg

from selfheal_dagster import defs as defs_package
from selfheal_dagster.adapters.settings import Settings, SettingsError
from selfheal_dagster.defs.accepted import accept_everywhere

accept_everywhere()  # Dagster's warnings on its own calls (defs/accepted.py)


def _module_defs(name: str) -> dg.Definitions | None:
    """A ``defs/`` module's definitions: its ``defs``, a ``dg.Definitions`` or an
    ``@dg.definitions`` function (called: it reads the settings when loaded, not imported)."""
    found = getattr(importlib.import_module(f"{defs_package.__name__}.{name}"), "defs", None)
    if found is None or isinstance(found, dg.Definitions):
        return found
    return found()


@dg.definitions
def defs() -> dg.Definitions:
    try:  # a bad setting: its one line first, before Dagster's wrapping and stack trace
        Settings.from_env()
    except SettingsError as exc:
        sys.stderr.write(f"selfheal_dagster cannot load: {exc}\n")
        sys.stderr.flush()
        raise
    loaded = [_module_defs(m.name) for m in pkgutil.iter_modules(defs_package.__path__)]
    return dg.Definitions.merge(*[d for d in loaded if d is not None])
