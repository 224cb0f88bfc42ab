"""The platform's HTTP services: the Phase 1 scraper service and the Phase 4 service.

``POST {base}/{name}?game_date=D`` (Phase 4: ``?analysis_date=D`` or ``game_date``, the
table's partition column). Each call has a timeout. It is sent again only when that cannot
run the work twice: the server answered 5xx or 429 (it says the work did not happen;
``Retry-After`` is honoured, bounded), or no connection was ever made. After a read timeout
or a connection lost mid-call the work may still be running, so the call fails instead: the
heal loop's next attempt (a new run) calls again. Every send of one call carries the same
``Idempotency-Key``, and the heal's correlation ID as ``X-Correlation-ID``. With a Google
ID token (Cloud Run, IAP) the call carries it; tokens never appear in errors or logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3.exceptions

from selfheal_dagster.core.job_context import CLI, JobContext

log = logging.getLogger("selfheal.services")


class ServiceError(RuntimeError):
    """A platform service failed; the message is one line with its status and answer."""


def google_id_token(audience: str) -> str:
    """A Google-signed ID token for ``audience``: from the metadata server (GKE Workload
    Identity, Cloud Run), a service-account key, or impersonated credentials
    (``gcloud auth application-default login --impersonate-service-account=…``); plain user
    credentials cannot mint one."""
    import google.auth.transport.requests
    import google.oauth2.id_token

    return google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), audience)


def never_connected(exc: requests.ConnectionError) -> bool:
    """Whether the request never left this process: refused, unresolvable, connect timeout."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
            return True
        if isinstance(cause, urllib3.exceptions.MaxRetryError):
            cause = cause.reason
            continue
        cause = cause.__cause__ or cause.__context__ or (cause.args[0] if cause.args else None)
        if not isinstance(cause, BaseException):
            return False
    return False


def retry_after(response: requests.Response) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), None when absent or unreadable."""
    raw = response.headers.get("Retry-After", "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass
class ServiceClient:
    name: str  # for messages: "scraper service", "Phase 4 service"
    base_url: str
    timeout_seconds: float = 60.0
    attempts: int = 3
    backoff_seconds: float = 2.0
    max_retry_after_seconds: float = 120.0
    id_token: Callable[[str], str] | None = None  # audience -> token; None: no auth header
    sleep: Callable[[float], None] = field(default=time.sleep)

    def post(self, path: str, params: Mapping[str, str], job: JobContext = CLI) -> dict[str, Any]:
        url = f"{self.base_url.rstrip('/')}/{path}"
        key = job.idempotency_key(f"{path}?{sorted(params.items())}")
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, **job.headers()}
        if self.id_token:
            headers["Authorization"] = f"Bearer {self.id_token(self.base_url)}"
        reason = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            wait = self.backoff_seconds * 2 ** (attempt - 1)
            try:
                response = requests.post(
                    url,
                    params=dict(params),
                    json=dict(params),
                    headers=headers,
                    timeout=self.timeout_seconds,
                )
            except requests.ConnectionError as exc:
                if not never_connected(exc):
                    raise ServiceError(
                        f"{self.name} {path}: connection lost mid-call; not sent again, the "
                        f"work may be running (Idempotency-Key {key})"
                    ) from None
                reason = f"connection failed ({type(exc).__name__})"
            except requests.Timeout:
                raise ServiceError(
                    f"{self.name} {path}: no answer within {self.timeout_seconds:g}s; not sent "
                    f"again, the work may be running (Idempotency-Key {key})"
                ) from None
            else:
                if response.status_code < 400:
                    return _json(response)
                answer = _clip(response.text)
                if response.status_code < 500 and response.status_code != 429:
                    raise ServiceError(
                        f"{self.name} refused {path} {dict(params)}: "
                        f"HTTP {response.status_code} {answer}"
                    )
                reason = f"HTTP {response.status_code} {answer}"
                asked = retry_after(response)
                if asked is not None:
                    wait = min(asked, self.max_retry_after_seconds)
            if attempt < self.attempts:
                log.warning(
                    "%s %s attempt %d/%d failed (%s); retrying in %.1fs",
                    self.name,
                    path,
                    attempt,
                    self.attempts,
                    reason,
                    wait,
                )
                self.sleep(wait)
        raise ServiceError(f"{self.name} failed {path} after {self.attempts} attempts: {reason}")


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {"result": body}


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
