"""Text that must stay one readable line: run tags, a sensor tick's reason, long lists."""

from __future__ import annotations

from collections.abc import Sequence

LINE_LIMIT = 120  # characters: a run tag and a sensor tick's skip reason stay one line


def one_line(text: str, limit: int = LINE_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def more(count: int, noun: str = "") -> str:
    """``and 3 more [noun]``: what a list that was cut leaves out, said one way everywhere."""
    return f"and {count} more" + (f" {noun}" if noun else "")


def listed(
    items: Sequence[str], limit: int, sep: str = "; ", then: str | None = None, noun: str = ""
) -> str:
    """The first ``limit`` items joined by ``sep``, then ``and N more [noun]`` after ``then``
    (``sep`` unless given): ``a; b; c; and 2 more tables``."""
    rest = len(items) - limit
    shown = sep.join(items[:limit])
    if rest <= 0:
        return shown
    return f"{shown}{sep if then is None else then}{more(rest, noun)}"
