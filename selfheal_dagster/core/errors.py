"""One line from a Dagster error, for alerts, history and the CLI."""


def error_summary(error) -> str:
    """The innermost cause's first line, without the exception's module path."""
    while error.cause is not None:
        error = error.cause
    lines = [line for line in error.message.strip().splitlines() if line.strip()]
    line = lines[0] if lines else "failed"
    kind, sep, rest = line.partition(": ")
    return f"{kind.rsplit('.', 1)[-1]}: {rest}" if sep and "." in kind else line


def error_line(exc: BaseException) -> str:
    """A Python exception as one line: its first line, or its type when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
