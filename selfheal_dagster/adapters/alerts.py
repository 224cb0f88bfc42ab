"""Heal alerts to Slack (or the log): one story per incident, told without ever holding up a
heal.

What each incident is owed is worked out in ``core/messages.py``; here it is sent: with a
Slack bot, one parent message whose thread takes a reply per attempt and whose status line is
edited (``chat.update``); with an incoming webhook (or the log), which cannot thread, one
message when it opens and one when it closes. With ``SELFHEAL_ALERTS=pages`` only pages are
sent, plus one digest a day of what healed.

Every message is keyed and noted on the incident's history record once tried, so a re-run
sensor tick sends nothing twice. Slack being slow, down, rate limiting or rejecting costs at
most a few bounded attempts and one warning; a reply or update whose parent is gone starts a
new parent. The webhook URL and the token never appear in a log line or a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from selfheal_dagster.core.dates import EASTERN, now_utc
from selfheal_dagster.core.history import HealRecord
from selfheal_dagster.core.incidents import Incident
from selfheal_dagster.core.messages import Message, Owed, digest, owed, parent

log = logging.getLogger("selfheal.alerts")

# Slack's errors for a message to reply to or edit that is no longer there.
GONE = frozenset({"message_not_found", "thread_not_found", "cant_update_message"})


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
    data: dict[str, Any] = field(default_factory=dict)  # the Web API's JSON answer


@dataclass(frozen=True)
class Sent:
    """What became of one message: delivered (with the Slack message it made), or not."""

    ok: bool
    ts: str = ""
    channel: str = ""
    gone: bool = False  # the message to reply to or edit is no longer there


class Sink:
    """The log: where alerts go when no Slack destination is configured."""

    name = "log"
    threads = False  # can reply in a thread and edit a message

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.echo = echo

    def post(self, message: Message, thread: Sent | None = None) -> Sent:
        log.info("%s", message.text())
        if self.echo:
            self.echo(message.text())
        return Sent(ok=True)

    def update(self, parent: Sent, message: Message) -> Sent:
        return self.post(message)

    def send(self, message: Message) -> bool:
        return self.post(message).ok


LogSink = Sink


@dataclass
class _SlackSink(Sink):
    delivery: Delivery = field(default_factory=Delivery)

    def _deliver(self, kind: str, call: Callable[[], Response]) -> Sent:
        reason = "no attempt made"
        for attempt in range(1, self.delivery.attempts + 1):
            wait = self.delivery.backoff_seconds * 2 ** (attempt - 1)
            try:
                response = call()
            except Exception as exc:  # noqa: BLE001 - a failed alert never fails a heal
                reason = f"{type(exc).__name__} (no response)"
            else:
                error = response.data.get("error", "") if response.data else ""
                if 200 <= response.status < 300 and not error:
                    return Sent(True, response.data.get("ts", ""), response.data.get("channel", ""))
                if error in GONE:
                    log.warning("Slack %s alert via %s: %s", kind, self.name, error)
                    return Sent(False, gone=True)
                if response.status == 429 or error == "ratelimited":
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
                        kind,
                        self.name,
                        response.status,
                        _clip(error or response.body, 200),
                    )
                    return Sent(False)
            if attempt < self.delivery.attempts:
                self.delivery.sleep(wait)
        log.warning(
            "Slack %s alert not delivered via %s after %d attempts: %s",
            kind,
            self.name,
            self.delivery.attempts,
            reason,
        )
        return Sent(False)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass
class WebhookSink(_SlackSink):
    """A Slack incoming webhook (``slack_sdk.webhook.WebhookClient``, which reports 4xx/5xx as
    a status code rather than raising). It cannot thread or edit."""

    url: str = ""
    name = "webhook"

    def post(self, message: Message, thread: Sent | None = None) -> Sent:
        from slack_sdk.webhook import WebhookClient

        def call() -> Response:
            client = WebhookClient(
                self.url, timeout=int(max(1, self.delivery.timeout_seconds)), retry_handlers=[]
            )
            sent = client.send_dict(message.payload())
            return Response(sent.status_code, dict(sent.headers or {}), sent.body or "")

        return self._deliver(message.kind, call)


@dataclass
class BotSink(_SlackSink):
    """Slack's Web API with a bot token, through a ``WebClient``: ``chat.postMessage`` (in a
    thread with ``thread_ts``) and ``chat.update``."""

    client_factory: Callable[[], Any] = lambda: None
    channel: str = ""
    name = "bot"
    threads = True

    def _call(self, method: str, **kwargs: Any) -> Callable[[], Response]:
        from slack_sdk.errors import SlackApiError

        def call() -> Response:
            client = self.client_factory()
            client.timeout = int(max(1, self.delivery.timeout_seconds))
            client.retry_handlers = []
            try:
                sent = getattr(client, method)(**kwargs)
            except SlackApiError as exc:
                got = exc.response
                data = got.data if isinstance(got.data, dict) else {}
                return Response(got.status_code, dict(got.headers or {}), str(got.data)[:200], data)
            return Response(sent.status_code, dict(sent.headers or {}), "", dict(sent.data))

        return call

    def post(self, message: Message, thread: Sent | None = None) -> Sent:
        payload = message.payload()
        kwargs: dict[str, Any] = {"channel": self.channel, "text": payload["text"]}
        if "attachments" in payload:
            kwargs["attachments"] = payload["attachments"]
        if thread is not None:
            kwargs.update(channel=thread.channel or self.channel, thread_ts=thread.ts)
        return self._deliver(message.kind, self._call("chat_postMessage", **kwargs))

    def update(self, parent: Sent, message: Message) -> Sent:
        payload = message.payload()
        call = self._call(
            "chat_update",
            channel=parent.channel or self.channel,
            ts=parent.ts,
            text=payload["text"],
            attachments=payload.get("attachments", []),
        )
        return self._deliver("update", call)


class Notifier:
    """Send what the heal history's incidents are owed and note it on them, so the history
    shows what was said and nothing is said twice."""

    def __init__(
        self,
        sink: Sink,
        warehouse,
        run_link: Callable[[str], str] | None = None,
        *,
        mode: str = "all",
        max_attempts: int = 3,
    ):
        self.sink = sink
        self.warehouse = warehouse
        self.run_link = run_link or (lambda run_id: run_id)
        self.mode = mode
        self.max_attempts = max_attempts

    def incidents(self, limit: int = 500) -> list[Incident]:
        """The incidents of the newest ``limit`` records, each whole, oldest first."""
        records = self.warehouse.history(limit=limit)
        by_cid: dict[str, list[HealRecord]] = {}
        for r in records:
            by_cid.setdefault(r.correlation_id, []).append(r)
        oldest = min((r.timestamp for r in records), default=None)
        out = []
        for cid, mine in by_cid.items():
            cut = len(records) >= limit and min(r.timestamp for r in mine) == oldest
            if cut or not any(r.healing_result.triggered for r in mine):
                # cut off, or an old incident's newest record alone (a page answered)
                mine = self.warehouse.history(correlation_id=cid, limit=limit)
            out.append(Incident.of(cid, mine))
        return sorted(out, key=lambda i: (i.records[0].timestamp, i.cid))

    def deliver(
        self,
        budget_seconds: float = 40.0,
        limit: int = 500,
        now: datetime | None = None,
    ) -> list[str]:
        """Send every message the incidents are owed, oldest incident first, within
        ``budget_seconds`` (the rest go next time); returns the keys tried.

        The heal loop only writes history; this is the one place alerts leave, so a slow or
        hanging Slack never delays a run request.
        """
        start = time.monotonic()
        now = now or now_utc()
        tried = []
        for incident in self.incidents(limit):
            if incident.legacy or not incident.launches:
                continue
            for item in owed(
                incident,
                mode=self.mode,
                threads=self.sink.threads,
                max_attempts=self.max_attempts,
                run_link=self.run_link,
            ):
                if time.monotonic() - start > budget_seconds:
                    return tried
                incident = self._send(incident, item)
                tried.append(item.key)
        if self.mode == "pages":
            tried += self._digests(now, start, budget_seconds, limit)
        return tried

    def _send(self, incident: Incident, item: Owed) -> Incident:
        current = _parent(incident)
        if item.where == "new":
            sent = self.sink.post(item.message)
        elif current is None:
            sent = Sent(False, gone=True)  # never delivered: nothing to reply to or edit
        elif item.where == "thread":
            sent = self.sink.post(item.message, current)
        else:
            sent = self.sink.update(current, item.message)
        if sent.gone:
            # The parent was deleted (or never delivered): a new parent, with the status as
            # it is now, takes the thread.
            again = self.sink.post(parent(incident, self.max_attempts))
            incident = self._note(incident, f"parent:{now_utc().isoformat()}", "parent", again)
            status, _ = incident.status(self.max_attempts)
            if item.where == "thread":  # the new parent shows the status as it is now
                incident = self._note(incident, f"status:{status}", "update", again)
            if item.where == "thread" and again.ok:
                sent = self.sink.post(item.message, again)
            else:
                sent = again
        incident = self._note(incident, item.key, item.message.kind, sent)
        for key in item.also:
            incident = self._note(incident, key, key.partition(":")[0], sent)
        return incident

    def _note(self, incident: Incident, key: str, kind: str, sent: Sent) -> Incident:
        note = {
            "kind": kind,
            "key": key,
            "at": now_utc().isoformat(),
            "via": self.sink.name,
            "delivered": sent.ok,
        }
        if sent.ts:
            note.update(ts=sent.ts, channel=sent.channel)
        holder = next((r for r in incident.records if any("key" in n for n in r.alerts)), None)
        holder = holder or incident.records[0]
        self.warehouse.note_alert(holder.id, note)
        return Incident(
            incident.cid,
            tuple(r.with_alert(note) if r is holder else r for r in incident.records),
        )

    def _digests(self, now: datetime, start: float, budget: float, limit: int) -> list[str]:
        """In pages mode: one message a day for the incidents that healed without a person."""
        today = now.astimezone(EASTERN).date()
        by_day: dict[date, list[Incident]] = {}
        for incident in self.incidents(limit):
            at = incident.closed_at
            if at is None or incident.legacy or incident.gave_up:
                continue
            day = at.astimezone(EASTERN).date()
            noted = {n["key"] for n in incident.notes}
            if today - timedelta(days=7) <= day < today and f"digest:{day}" not in noted:
                by_day.setdefault(day, []).append(incident)
        tried = []
        for day, incidents in sorted(by_day.items()):
            if time.monotonic() - start > budget:
                break
            sent = self.sink.post(digest(day, incidents))
            for incident in incidents:
                self._note(incident, f"digest:{day}", "digest", sent)
            tried.append(f"digest:{day}")
        return tried


def _parent(incident: Incident) -> Sent | None:
    """The incident's current parent message (the newest delivered one)."""
    parents = [
        n for n in incident.notes if n["kind"] == "parent" and n.get("delivered") and n.get("ts")
    ]
    if not parents:
        return None
    last = max(parents, key=lambda n: n["at"])
    return Sent(True, last["ts"], last.get("channel", ""))


def _clip(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
