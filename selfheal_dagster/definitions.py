"""The code location: every module under ``defs/``, merged.

``dagster dev`` (workspace.yaml), ``dagster asset materialize -m selfheal_dagster.definitions``
and the ``selfheal`` CLI all load this. Each ``defs/`` module holds one ``dg.Definitions`` or
one ``@dg.definitions`` function; adding a module there is all it takes to load it.

Not ``dg.load_from_defs_folder``: it also imports every installed dg plugin's component
registry, and dagster-gcp's pulls in the BigQuery client (measured 0.93 s vs 0.03 s for the
same definitions, paid by every run process and code-server load; see benchmarks/).
"""

import importlib
import pkgutil
import sys

import dagster as dg
from dagster.components.definitions import LazyDefinitions

from selfheal_dagster import defs as defs_package
from selfheal_dagster.adapters.settings import Settings, SettingsError
from selfheal_dagster.defs.accepted import accept_everywhere

accept_everywhere()  # Dagster's warnings on its own calls (defs/accepted.py)


def _module_defs(name: str) -> dg.Definitions | None:
    module = importlib.import_module(f"{defs_package.__name__}.{name}")
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, dg.Definitions)
        or (isinstance(obj, LazyDefinitions) and obj.load_fn.__module__ == module.__name__)
    ]
    if len(found) > 1:
        raise dg.DagsterInvalidDefinitionError(
            f"{module.__name__} holds {len(found)} Definitions: expected at most one"
        )
    if not found:
        return None
    return found[0]() if isinstance(found[0], LazyDefinitions) else found[0]


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
