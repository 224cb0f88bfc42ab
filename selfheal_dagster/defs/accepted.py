"""The Dagster beta and preview APIs the project uses on purpose, and the one way their
warnings are silenced: for the definitions that use them, and nothing else."""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

# Warnings Dagster raises on its own calls, or on every asset, whatever we write: silenced for
# the process. Dagster 1.13 re-creates sensor definitions internally with its beta `owners`
# parameter and warns about its own call on every load (nothing here sets sensor owners);
# `backfill_policy` is beta and warns on every asset definition, and it is what
# `--partition-range` and ranged runs need.
EVERYWHERE = ("Parameter `owners`", "Parameter `backfill_policy`")


def accept_everywhere() -> None:
    """Called once, by the code location's entry point (``definitions.py``): importing this
    module changes nothing."""
    for message in EVERYWHERE:
        warnings.filterwarnings("ignore", message=message, category=dg.BetaWarning)


@contextmanager
def accepted(*categories: type[Warning]) -> Iterator[None]:
    """Build a definition that uses a beta or preview API without its warning."""
    with warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("ignore", category)
        yield
