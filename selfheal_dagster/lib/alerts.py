"""Heal alerts: what they say, and getting them to Slack without ever holding up a heal.

Messages are plain data built from heal history records. A sink delivers them: Slack's Web
API with a bot token, a Slack incoming webhook, or the log. Slack being slow, down, rate
limiting or rejecting the payload costs at most a few bounded attempts and one warning; the
webhook URL and the token never appear in a log line or a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from selfheal_dagster.lib.dates import now_utc
from selfheal_dagster.lib.history import FINAL, HealRecord, Outcome
from selfheal_dagster.tables import PHASE_OWNERS

log = logging.getLogger("selfheal.alerts")

ORANGE = "#FFA500"
COLORS = {
    "triggered": ORANGE,
    Outcome.HEALED: "#2EB67D",
    Outcome.FAILED: "#E01E5A",
    Outcome.GAVE_UP: "#8B0000",
    Outcome.SKIPPED: "#ECB22E",
}


@dataclass(frozen=True)
class Message:
    kind: str  # triggered | healed | failed | gave_up | skipped
    title: str
    color: str
    fields: tuple[tuple[str, str], ...]
    bullets: tuple[str, ...] = ()
    bullets_title: str = ""

    def text(self) -> str:
        """The message as plain text: the log sink's output and Slack's fallback text."""
        lines = [self.title, *(f"{k}: {v}" for k, v in self.fields)]
        if self.bullets:
            lines.append(f"{self.bullets_title}:")
            lines += [f"• {b}" for b in self.bullets]
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """Slack message JSON: one coloured attachment in the familiar layout."""
        fields = [{"title": k, "value": v, "short": len(v) < 40} for k, v in self.fields]
        if self.bullets:
            fields.append(
                {
                    "title": self.bullets_title,
                    "value": "\n".join(f"• {b}" for b in self.bullets),
                    "short": False,
                }
            )
        return {
            "text": self.title,
            "attachments": [
                {
                    "color": self.color,
                    "title": self.title,
                    "fields": fields,
                    "fallback": self.text(),
                }
            ],
        }


def _phase(record: HealRecord) -> str:
    return f"Phase {record.phase.removeprefix('phase')}"


def _owner(record: HealRecord) -> tuple[str, str]:
    return ("Owner", PHASE_OWNERS.get(int(record.phase.removeprefix("phase")), "—"))


def triggered(record: HealRecord) -> Message:
    missing = record.missing_components or [
        f"(none: refresh of {', '.join(a.rsplit('/', 1)[-1] for a in record.assets)})"
    ]
    return Message(
        kind="triggered",
        title=f"🔧 Self-Heal Triggered: {_phase(record)}",
        color=ORANGE,
        fields=(
            ("Date", record.target_date.isoformat()),
            ("Phase", _phase(record)),
            ("Healing Triggered", "✅ Yes" if record.healing_result.triggered else "❌ No"),
            ("Correlation ID", f"`{record.correlation_id}`"),
        ),
        bullets=tuple(missing),
        bullets_title="Missing Components",
    )


def outcome(record: HealRecord, run_link: Callable[[str], str] = lambda run_id: run_id) -> Message:
    phase = _phase(record)
    common = [("Date", record.target_date.isoformat()), ("Phase", phase)]
    cid = ("Correlation ID", f"`{record.correlation_id}`")
    runs = ", ".join(run_link(r) for r in record.run_ids) or "—"
    if record.outcome is Outcome.HEALED:
        took = record.seconds_to_heal
        return Message(
            kind=str(record.outcome),
            title=f"✅ Self-Heal Healed: {phase}",
            color=COLORS[Outcome.HEALED],
            fields=(
                *common,
                ("Detected to healed", _duration(took) if took is not None else "—"),
                ("Attempt", str(record.attempt)),
                ("Run", runs),
                cid,
            ),
            bullets=tuple(record.missing_components),
            bullets_title="Healed Components",
        )
    if record.outcome is Outcome.GAVE_UP:
        return Message(
            kind=str(record.outcome),
            title=f"🚨 Self-Heal Gave Up: {phase} — needs a person",
            color=COLORS[Outcome.GAVE_UP],
            fields=(
                *common,
                ("Attempts made", str(record.attempt)),
                _owner(record),
                cid,
                ("Reason", _clip(record.healing_result.reason)),
            ),
            bullets=tuple(record.missing_components),
            bullets_title="Still Missing",
        )
    failed = record.outcome is Outcome.FAILED
    return Message(
        kind=str(record.outcome),
        title=f"❌ Self-Heal Failed: {phase}" if failed else f"⏭️ Self-Heal Skipped: {phase}",
        color=COLORS[record.outcome],
        fields=(
            *common,
            ("Attempt", str(record.attempt)),
            ("Run", runs),
            _owner(record),
            cid,
            ("Error" if failed else "Reason", _clip(record.healing_result.reason)),
        ),
        bullets=tuple(record.missing_components),
        bullets_title="Missing Components",
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clip(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- sinks ------------------------------------------------------------------------------------


@dataclass
class Delivery:
    """How hard to try: bounded attempts, a timeout each, Retry-After honoured up to a cap."""

    attempts: int = 3
    timeout_seconds: float = 3.0
    backoff_seconds: float = 0.5
    max_retry_after_seconds: float = 5.0
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: str


class Sink:
    """The log: where alerts go when no Slack destination is configured."""

    name = "log"

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.echo = echo

    def send(self, message: Message) -> bool:
        log.info("%s", message.text())
        if self.echo:
            self.echo(message.text())
        return True


LogSink = Sink


@dataclass
class _SlackSink(Sink):
    delivery: Delivery = field(default_factory=Delivery)

    def post(self, message: Message) -> Response:
        raise NotImplementedError

    def send(self, message: Message) -> bool:
        reason = "no attempt made"
        for attempt in range(1, self.delivery.attempts + 1):
            wait = self.delivery.backoff_seconds * 2 ** (attempt - 1)
            try:
                response = self.post(message)
            except Exception as exc:  # noqa: BLE001 - a failed alert never fails a heal
                reason = f"{type(exc).__name__} (no response)"
            else:
                if 200 <= response.status < 300:
                    return True
                if response.status == 429:
                    asked = _seconds(
                        response.headers.get("Retry-After") or response.headers.get("retry-after")
                    )
                    wait = min(
                        asked if asked is not None else wait, self.delivery.max_retry_after_seconds
                    )
                    reason = f"rate limited (HTTP 429, Retry-After {asked})"
                elif response.status >= 500:
                    reason = f"HTTP {response.status}"
                else:
                    log.warning(
                        "Slack rejected the %s alert via %s: HTTP %s %s",
                        message.kind,
                        self.name,
                        response.status,
                        _clip(response.body, 200),
                    )
                    return False
            if attempt < self.delivery.attempts:
                self.delivery.sleep(wait)
        log.warning(
            "Slack %s alert not delivered via %s after %d attempts: %s",
            message.kind,
            self.name,
            self.delivery.attempts,
            reason,
        )
        return False


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass
class WebhookSink(_SlackSink):
    """A Slack incoming webhook (``slack_sdk.webhook.WebhookClient``, which reports 4xx/5xx as
    a status code rather than raising)."""

    url: str = ""
    name = "webhook"

    def post(self, message: Message) -> Response:
        from slack_sdk.webhook import WebhookClient

        client = WebhookClient(
            self.url, timeout=int(max(1, self.delivery.timeout_seconds)), retry_handlers=[]
        )
        sent = client.send_dict(message.payload())
        return Response(sent.status_code, dict(sent.headers or {}), sent.body or "")


@dataclass
class BotSink(_SlackSink):
    """Slack's Web API ``chat.postMessage`` with a bot token, through a ``WebClient``."""

    client_factory: Callable[[], Any] = lambda: None
    channel: str = ""
    name = "bot"

    def post(self, message: Message) -> Response:
        from slack_sdk.errors import SlackApiError

        client = self.client_factory()
        client.timeout = int(max(1, self.delivery.timeout_seconds))
        client.retry_handlers = []
        payload = message.payload()
        try:
            sent = client.chat_postMessage(
                channel=self.channel, text=payload["text"], attachments=payload["attachments"]
            )
        except SlackApiError as exc:
            got = exc.response
            return Response(got.status_code, dict(got.headers or {}), str(got.data)[:200])
        return Response(sent.status_code, dict(sent.headers or {}), "")


# --- announcing heals -------------------------------------------------------------------------


class Notifier:
    """Send a record's alert and note it on the record, so the history shows what was said."""

    def __init__(self, sink: Sink, warehouse, run_link: Callable[[str], str] | None = None):
        self.sink = sink
        self.warehouse = warehouse
        self.run_link = run_link or (lambda run_id: run_id)

    def triggered(self, record: HealRecord) -> HealRecord:
        return self._send(record, triggered(record))

    def outcome(self, record: HealRecord) -> HealRecord:
        return self._send(record, outcome(record, self.run_link))

    def deliver(self, budget_seconds: float = 40.0, limit: int = 500) -> list[HealRecord]:
        """Send every alert the heal history owes, oldest first, each record's "triggered"
        before its outcome, within ``budget_seconds`` (the rest go next time).

        The heal loop only writes history; this is the one place alerts leave, so a slow or
        hanging Slack never delays a run request. An alert is noted on its record once tried
        (delivered or not), so nothing is sent twice.
        """
        start = time.monotonic()
        sent = []
        records = sorted(self.warehouse.history(limit=limit), key=lambda r: r.timestamp)
        for record in records:
            done = {a["kind"] for a in record.alerts}
            if record.healing_result.triggered and "triggered" not in done:
                if time.monotonic() - start > budget_seconds:
                    break
                record = self.triggered(record)
                sent.append(record)
            if record.outcome in FINAL and str(record.outcome) not in done:
                if time.monotonic() - start > budget_seconds:
                    break
                sent.append(self.outcome(record))
        return sent

    def _send(self, record: HealRecord, message: Message) -> HealRecord:
        delivered = self.sink.send(message)
        note = {
            "kind": message.kind,
            "at": now_utc().isoformat(),
            "via": self.sink.name,
            "delivered": delivered,
        }
        self.warehouse.note_alert(record.id, note)
        return record.with_alert(note)
