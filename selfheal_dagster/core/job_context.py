"""Who a warehouse job or a service call works for: BigQuery job labels, service headers and
the idempotency key of a call, from one small value built where the work starts."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

APP = "selfheal"
_NAMESPACE = uuid.UUID("5e1f4ea1-0000-4000-8000-000000000025")
_BAD = re.compile(r"[^a-z0-9_-]")


def label(value: object) -> str:
    """A BigQuery label value: lowercase letters, digits, ``_`` and ``-``, at most 63."""
    return _BAD.sub("_", str(value).lower())[:63]


@dataclass(frozen=True)
class JobContext:
    component: str  # asset | check | sweep | heal | verify | cli | doctor
    asset: str = ""  # the table being written or checked
    run_id: str = ""
    correlation_id: str = ""
    attempt: int = 0

    def labels(self) -> dict[str, str]:
        """Labels on every BigQuery job: what it serves, so a bill or a stuck job can be
        traced to an asset, a run and a heal (and a run's jobs found to cancel them)."""
        out = {"app": APP, "component": label(self.component)}
        if self.asset:
            out["asset"] = label(self.asset)
        if self.run_id:
            out["dagster_run_id"] = label(self.run_id)
        if self.correlation_id:
            out["correlation_id"] = label(self.correlation_id)
        if self.attempt:
            out["attempt"] = str(self.attempt)
        return out

    def headers(self) -> dict[str, str]:
        """Headers on every service call: the heal it serves and the run that makes it."""
        out = {}
        if self.correlation_id:
            out["X-Correlation-ID"] = self.correlation_id
        if self.run_id:
            out["X-Dagster-Run-ID"] = self.run_id
        return out

    def idempotency_key(self, call: str) -> str:
        """The same key for every retry of ``call`` within one run (one heal attempt), a new
        one for the next run: a service that saw the key already does not do the work twice."""
        if not self.run_id:
            return str(uuid.uuid4())
        return str(uuid.uuid5(_NAMESPACE, f"{self.run_id}|{self.attempt}|{call}"))


CLI = JobContext(component="cli")
