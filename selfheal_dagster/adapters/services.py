"""The platform's HTTP services: the Phase 1 scraper service and the Phase 4 service.

``POST {base}/{name}?game_date=D`` (Phase 4: ``?analysis_date=D`` or ``game_date``, the
table's partition column). Each call has a timeout; 5xx, 429 and connection errors are retried
a bounded number of times with growing back-off; any other 4xx fails at once with the
service's answer in the error. With a Google ID token (Cloud Run, IAP) the call carries it;
tokens never appear in errors or logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

log = logging.getLogger("selfheal.services")


class ServiceError(RuntimeError):
    """A platform service failed; the message is one line with its status and answer."""


def google_id_token(audience: str) -> str:
    """A Google-signed ID token for ``audience`` (from the metadata server or credentials)."""
    import google.auth.transport.requests
    import google.oauth2.id_token

    return google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), audience)


@dataclass
class ServiceClient:
    name: str  # for messages: "scraper service", "Phase 4 service"
    base_url: str
    timeout_seconds: float = 60.0
    attempts: int = 3
    backoff_seconds: float = 2.0
    id_token: Callable[[str], str] | None = None  # audience -> token; None: no auth header
    sleep: Callable[[float], None] = field(default=time.sleep)

    def post(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        url = f"{self.base_url.rstrip('/')}/{path}"
        headers = {"Content-Type": "application/json"}
        if self.id_token:
            headers["Authorization"] = f"Bearer {self.id_token(self.base_url)}"
        reason = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            try:
                response = requests.post(
                    url,
                    params=dict(params),
                    json=dict(params),
                    headers=headers,
                    timeout=self.timeout_seconds,
                )
            except requests.Timeout:
                reason = f"no answer within {self.timeout_seconds:g}s"
            except requests.ConnectionError as exc:
                reason = f"connection failed ({type(exc).__name__})"
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
            if attempt < self.attempts:
                wait = self.backoff_seconds * 2 ** (attempt - 1)
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
