"""What the alerts say: one story per incident, as plain data.

An incident (``core/incidents.py``) is told with a parent message whose status line changes
(🔧 → ✅ / 🚨), a reply per attempt, a page when a person is needed, and (for a sink that
cannot thread) an opening and a closing roll-up; ``owed`` says which messages an incident is
still owed, from the notes of what was said. Sending them is ``adapters/alerts.py``'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from selfheal_dagster.core.healing import WAITED_REASON
from selfheal_dagster.core.history import HealRecord, Outcome
from selfheal_dagster.core.incidents import (
    Attempt,
    Incident,
    first_lines,
    healer,
    held_lines,
    owner,
)
from selfheal_dagster.core.text import listed

ORANGE = "#FFA500"
COLORS = {
    "healing": ORANGE,
    "healed": "#2EB67D",
    "failed": "#E01E5A",
    "gave_up": "#8B0000",
    "digest": "#439FE0",
}
MODES = ("all", "pages")


@dataclass(frozen=True)
class Message:
    kind: str  # parent | reply | update | page | open | close | fixed | digest
    title: str
    color: str = ""
    fields: tuple[tuple[str, str], ...] = ()
    bullets: tuple[str, ...] = ()
    bullets_title: str = ""
    lines: tuple[str, ...] = ()

    def text(self) -> str:
        """The message as plain text: the log sink's output and Slack's fallback text."""
        out = [self.title, *(f"{k}: {v}" for k, v in self.fields), *self.lines]
        if self.bullets:
            out.append(f"{self.bullets_title}:")
            out += [f"• {b}" for b in self.bullets]
        return "\n".join(out)

    def payload(self) -> dict[str, Any]:
        """Slack message JSON: a coloured attachment in the familiar layout, or plain text."""
        if not self.color:
            return {"text": self.text()}
        fields = [{"title": k, "value": v, "short": len(v) < 40} for k, v in self.fields]
        if self.lines:
            fields.append({"title": "", "value": "\n".join(self.lines), "short": False})
        if self.bullets:
            fields.append(
                {
                    "title": self.bullets_title,
                    "value": "\n".join(f"• {b}" for b in self.bullets),
                    "short": False,
                }
            )
        attachment = {"color": self.color, "title": self.title, "fields": fields}
        return {"text": self.title, "attachments": [{**attachment, "fallback": self.text()}]}


def parent(incident: Incident, max_attempts: int) -> Message:
    """The incident's message: what broke, what will run, and its status line."""
    status, color = incident.status(max_attempts)
    return Message(
        kind="parent",
        title=f"🔧 Self-Heal Triggered: {incident.phases()}",
        color=COLORS[color],
        fields=(
            ("Date", incident.dates()),
            ("Phase", incident.phases()),
            ("Healing Triggered", "✅ Yes"),
            ("Correlation ID", f"`{incident.cid}`"),
            ("Plan", incident.plan()),
            ("Status", status),
        ),
        bullets=tuple(first_lines(incident.broke())),
        bullets_title="Missing Components",
    )


def reply(
    incident: Incident,
    launch: Attempt,
    max_attempts: int,
    run_link: Callable[[str], str] = lambda run_id: run_id,
) -> Message:
    """How one attempt went; its runs at the end."""
    runs = sorted({run for r in launch.records for run in r.run_ids})
    shown = listed([run_link(r) for r in runs], 3, ", ", then=" ")
    return Message(
        kind="reply",
        title=incident.attempt_title(launch, max_attempts),
        lines=(*incident.attempt_lines(launch), *([f"Runs: {shown}"] if runs else [])),
    )


def superseded(record: HealRecord) -> Message:
    name = f"{', '.join(record.missing_components)} {record.target_date}"
    if by := healer(record):
        return Message(
            kind="reply",
            title=f"↪️ {name} was healed by the runs of incident {by}; no further attempt",
        )
    return Message(
        kind="reply",
        title=f"↩️ {name} came back by other means (its check passes); no further attempt",
    )


def fixed(record: HealRecord) -> Message:
    """A page answered: the target given up on is healed, and by what."""
    name = f"{', '.join(record.missing_components)} {record.target_date}"
    runs = f" (run {', '.join(r[:8] for r in record.run_ids)})" if record.run_ids else ""
    return Message(
        kind="fixed",
        title=f"✅ Fixed: {name} healed by incident {healer(record)}{runs}; the page is answered",
        color=COLORS["healed"],
    )


def page(incident: Incident, gave_up: list[HealRecord], waiting: list[HealRecord] = ()) -> Message:
    """The give-up: a person is needed. Who, and what stays broken until they act
    (``waiting``: targets given up with it only because they waited for it)."""
    names = ", ".join(f"{r.missing_components[0]} {r.target_date}" for r in gave_up)
    days = sorted({r.target_date for r in gave_up})
    return Message(
        kind="page",
        title=f"🚨 Self-Heal Gave Up: {names} — needs a person",
        color=COLORS["gave_up"],
        fields=(
            ("Date", ", ".join(map(str, days))),
            ("Phase", incident.phases()),
            ("Attempts made", str(max(r.attempt for r in gave_up))),
            ("Owner", ", ".join(sorted({owner(r) for r in gave_up}))),
            ("Correlation ID", f"`{incident.cid}`"),
            (
                "Once fixed",
                "; ".join(f"`selfheal heal --date {d}`" for d in days)
                + " once the source delivers (the loop itself tries again after a day)",
            ),
        ),
        bullets=(
            *(line for r in gave_up for line in held_lines(r)),
            *(f"held (waited for it): {r.missing_components[0]} {r.target_date}" for r in waiting),
        ),
        bullets_title="Stays broken until fixed",
    )


def close(
    incident: Incident,
    max_attempts: int,
    paging: list[HealRecord],
    waiting: list[HealRecord],
) -> Message:
    """The webhook's closing roll-up: every attempt in a few lines; the page if one is due."""
    status, color = incident.status(max_attempts)
    lines = []
    for launch in incident.launches:
        lines.append(incident.attempt_title(launch, max_attempts))
        lines += [f"   {line}" for line in incident.attempt_lines(launch)]
    lines += [superseded(r).title for r in incident.of_outcome(Outcome.SUPERSEDED)]
    base = page(incident, paging, waiting) if paging else None
    title = {
        "healed": f"✅ Self-Heal Healed: {incident.phases()}",
        "failed": f"❌ Self-Heal Failed: {incident.phases()}",
    }.get(color, base.title if base else f"🚨 Self-Heal Gave Up: {incident.phases()}")
    return Message(
        kind="close",
        title=title,
        color=COLORS[color],
        fields=(
            ("Date", incident.dates()),
            ("Phase", incident.phases()),
            ("Correlation ID", f"`{incident.cid}`"),
            ("Plan", incident.plan()),
            ("Status", status),
            *(
                f
                for f in (base.fields if base else ())
                if f[0] in ("Attempts made", "Owner", "Once fixed")
            ),
        ),
        lines=tuple(first_lines(lines, 14)),
        bullets=base.bullets if base else (),
        bullets_title=base.bullets_title if base else "",
    )


def digest(day: date, incidents: list[Incident]) -> Message:
    first = sum(i.healed_on_first_attempt for i in incidents)
    lines = []
    for i in incidents:
        attempts = i.launches[-1].attempt if i.launches else 1
        said = "on attempt 1" if i.healed_on_first_attempt else f"after {attempts} attempt(s)"
        lines.append(f"✅ {'; '.join(first_lines(i.broke(), 2)) or 'a refresh'}: healed {said}")
    return Message(
        kind="digest",
        title=(
            f"🗒️ Self-Heal digest for {day}: {len(incidents)} incident(s) healed without a "
            f"person ({first} on attempt 1)"
        ),
        lines=tuple(first_lines(lines, 20)),
    )


@dataclass(frozen=True)
class Owed:
    """One message an incident is owed: its key, what it says, and where it goes."""

    key: str
    message: Message
    where: str  # "new" | "thread" | "update"
    also: tuple[str, ...] = ()  # other keys this message settles (a roll-up with its page)


def owed(
    incident: Incident,
    *,
    mode: str,
    threads: bool,
    max_attempts: int,
    run_link: Callable[[str], str] = lambda run_id: run_id,
) -> Iterator[Owed]:
    """What ``incident`` is still owed, in the order it is to be said."""
    noted = {n["key"] for n in incident.notes}
    pages = _pages(incident)
    answers = [
        (f"fixed:{r.id}", fixed(r))
        for r in incident.of_outcome(Outcome.FIXED)
        if f"fixed:{r.id}" not in noted
    ]
    if mode == "pages":
        for key, records, waiting in pages:
            if key not in noted:
                yield Owed(key, page(incident, records, waiting), "new")
        yield from (Owed(key, message, "new") for key, message in answers)
        return
    if not threads:
        if "open" not in noted:
            yield Owed("open", replace(parent(incident, max_attempts), kind="open"), "new")
        due = [p for p in pages if p[0] not in noted]
        if incident.closed and "close" not in noted:
            if len(due) <= 1:  # the closing roll-up is the page
                message = close(incident, max_attempts, *(due[0][1:] if due else ([], [])))
                yield Owed("close", message, "new", tuple(k for k, *_ in due))
                due = []
            else:
                yield Owed("close", close(incident, max_attempts, [], []), "new")
        for key, records, waiting in due:
            yield Owed(key, page(incident, records, waiting), "new")
        yield from (Owed(key, message, "new") for key, message in answers)
        return
    status, _ = incident.status(max_attempts)
    if "parent" not in noted:  # it shows the status as it is now
        yield Owed("parent", parent(incident, max_attempts), "new", (f"status:{status}",))
    for launch in incident.launches:
        if launch.settled and launch.key not in noted:
            yield Owed(launch.key, reply(incident, launch, max_attempts, run_link), "thread")
    for record in incident.of_outcome(Outcome.SUPERSEDED):
        if f"superseded:{record.id}" not in noted:
            yield Owed(f"superseded:{record.id}", superseded(record), "thread")
    for key, records, waiting in pages:
        if key not in noted:
            yield Owed(key, page(incident, records, waiting), "new")
    yield from (Owed(key, message, "thread") for key, message in answers)
    if f"status:{status}" not in noted and "parent" in noted:
        yield Owed(f"status:{status}", parent(incident, max_attempts), "update")


def _pages(incident: Incident) -> list[tuple[str, list[HealRecord], list[HealRecord]]]:
    """A page per target given up; a target given up only because the heal it waited for
    failed (given up in the same tick) is a line in that page, not a page of its own."""
    by_time: dict[datetime, list[HealRecord]] = {}
    for r in incident.gave_up:
        by_time.setdefault(r.timestamp, []).append(r)
    out = []
    for _, group in sorted(by_time.items()):
        roots = [r for r in group if WAITED_REASON not in r.healing_result.reason] or group
        waiting = [r for r in group if r not in roots]
        for i, root in enumerate(roots):
            out.append((f"page:{root.id}", [root], waiting if i == 0 else []))
    return out
