"""A Slack Web API on 127.0.0.1 (pytest-httpserver): ``chat.postMessage`` and ``chat.update``
as Slack answers them, recording what a channel would show."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from werkzeug import Request, Response


@dataclass
class Post:
    method: str  # chat.postMessage | chat.update
    ts: str
    channel: str
    thread_ts: str | None
    text: str
    attachments: list[dict[str, Any]]

    @property
    def title(self) -> str:
        return self.attachments[0]["title"] if self.attachments else self.text.splitlines()[0]

    @property
    def body(self) -> str:
        """Everything a person reads in it."""
        parts = [self.text]
        for a in self.attachments:
            parts += [a.get("title", "")]
            parts += [f"{f['title']}: {f['value']}" for f in a.get("fields", [])]
        return "\n".join(parts)

    @property
    def color(self) -> str:
        return self.attachments[0].get("color", "") if self.attachments else ""


@dataclass
class FakeSlack:
    """Answers like Slack; ``deleted`` holds message ts that were deleted in the channel."""

    channel_id: str = "C0SELFHEAL"
    calls: list[Post] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)
    tokens: list[str] = field(default_factory=list)
    _next: int = 1000

    def install(self, httpserver, prefix: str = "/api/") -> str:
        for method in ("chat.postMessage", "chat.update"):
            httpserver.expect_request(f"{prefix}{method}", method="POST").respond_with_handler(
                lambda request, m=method: self.handle(m, request)
            )
        return httpserver.url_for(prefix)

    def handle(self, method: str, request: Request) -> Response:
        self.tokens.append(request.headers.get("Authorization", ""))
        sent = request.get_json(silent=True) or request.form.to_dict()
        attachments = sent.get("attachments") or []
        if isinstance(attachments, str):
            attachments = json.loads(attachments)
        if method == "chat.update":
            if sent["ts"] in self.deleted:
                return _json({"ok": False, "error": "message_not_found"})
            ts = sent["ts"]
        else:
            thread = sent.get("thread_ts")
            if thread and thread in self.deleted:
                return _json({"ok": False, "error": "thread_not_found"})
            self._next += 1
            ts = f"{self._next}.000100"
        self.calls.append(
            Post(
                method,
                ts,
                sent["channel"],
                sent.get("thread_ts"),
                sent.get("text", ""),
                attachments,
            )
        )
        return _json({"ok": True, "channel": self.channel_id, "ts": ts})

    # --- what the channel shows -------------------------------------------------------------

    @property
    def top_level(self) -> list[Post]:
        return [c for c in self.calls if c.method == "chat.postMessage" and not c.thread_ts]

    def replies(self, ts: str) -> list[Post]:
        return [c for c in self.calls if c.thread_ts == ts]

    def updates(self, ts: str) -> list[Post]:
        return [c for c in self.calls if c.method == "chat.update" and c.ts == ts]

    def shown(self, ts: str) -> Post:
        """The message as the channel shows it now (its last edit)."""
        return (
            [c for c in self.calls if c.ts == ts and c.method == "chat.update"]
            or [c for c in self.calls if c.ts == ts]
        )[-1]


def _json(data: dict) -> Response:
    return Response(json.dumps(data), status=200, content_type="application/json")
