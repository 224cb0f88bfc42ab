"""Every command in README.md and docs/ is one that runs as written: each shell block is read
line by line, and each command is parsed by the real command-line interface it names, with
its options, arguments and choices (``selfheal``, ``dagster``, ``dagster-daemon``,
``dagster-webserver``, ``dg``, ``make``). The README's heal by hand is also run for real
(``e2e/test_cli.py``). Commands of tools this machine does not have (``docker``, ``helm``,
``kubectl``, ``gcloud``) are checked for the project files they name; only a real cluster
runs them (docs/deploying.md)."""

from __future__ import annotations

import re
import shlex
import warnings

import click
import pytest

from selfheal_dagster_tests.support import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ELSEWHERE = {"docker", "helm", "kubectl", "gcloud"}


def commands(text: str) -> list[str]:
    """The commands of a markdown text's ``bash`` blocks: continuation lines joined, comments
    and blank lines left out."""
    found = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                found.append(" ".join(shlex.quote(w) for w in words))
    return found


def clis() -> dict[str, click.Command]:
    from dagster._cli import cli as dagster
    from dagster._daemon.cli import cli as daemon
    from dagster_dg_cli.cli import cli as dg
    from dagster_webserver.cli import cli as webserver

    from selfheal_dagster.cli import cli as selfheal

    return {
        "selfheal": selfheal,
        "dagster": dagster,
        "dagster-daemon": daemon,
        "dagster-webserver": webserver,
        "dg": dg,
    }


def parse(command: click.Command, args: list[str], name: str) -> None:
    """Parse ``args`` as ``command`` would, down to the subcommand that runs; raises a
    ``click.UsageError`` (unknown command or option, bad choice or type) otherwise."""
    with command.make_context(name, list(args), resilient_parsing=False) as ctx:
        if isinstance(command, click.Group):
            with warnings.catch_warnings():  # protected_args: Click 8's place for them
                warnings.simplefilter("ignore", DeprecationWarning)
                rest = [*ctx.protected_args, *ctx.args]
            if not rest:
                return
            sub_name, sub, sub_args = command.resolve_command(ctx, rest)
            parse(sub, sub_args, f"{name} {sub_name}")


def problem(line: str, known: dict[str, click.Command]) -> str | None:
    words = shlex.split(line)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        name, value = words[0].split("=", 1)
        # VAR=$(command ...): that command; VAR=value before a command: the command.
        words = [value[2:], *words[1:]] if value.startswith("$(") else words[1:]
    if not words or words[0] in ("export", "cd"):
        return None
    program = words[0].removeprefix(".venv/bin/")
    if program == "make":
        targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
        missing = [t for t in words[1:] if t not in targets]
        return f"no make target {missing}" if missing else None
    if program in ELSEWHERE:
        if "--" in words and words[words.index("--") + 1] == "selfheal":
            # A command run in a pod: the selfheal part runs as written.
            return problem(" ".join(words[words.index("--") + 1 :]), known)
        paths = [w for w in words if w.startswith("deploy/")]
        missing = [p for p in paths if not (ROOT / p).exists()]
        return f"names missing files {missing}" if missing else None
    if program not in known:
        return f"an unknown program {program!r}: add it to test_docs"
    try:
        parse(known[program], words[1:], program)
    except click.ClickException as exc:
        return exc.format_message()
    return None


def test_every_command_in_the_readme_and_docs_parses_as_written():
    known = clis()
    found = {(path.name, line) for path in DOCS for line in commands(path.read_text())}
    assert len(found) > 30
    programs = {shlex.split(line)[0].removeprefix(".venv/bin/") for _, line in found}
    assert {"make", "selfheal", "dagster", "dg", "dagster-daemon", "helm"} <= programs
    wrong = sorted(
        (doc, line, said) for doc, line in found if (said := problem(line, known)) is not None
    )
    assert wrong == []


@pytest.mark.parametrize(
    "line",
    [
        "make tests",
        ".venv/bin/selfheal heal --date 2026-01-20 --dryrun",
        ".venv/bin/selfheal backfill --start 2026-01-20 --end 2026-13-01",
        "selfheal gap --table no_such_table --date 2026-01-20",
        "dagster job backfill -w workspace.yaml -j heal_job --form 2026-01-19",
        "dg launch --asset nba_raw/bdl_player_boxscores",
        "dagster-daemon start -w deploy/workspace.yaml",
        "kubectl apply -f deploy/k8s/no-such.yaml",
    ],
)
def test_a_command_that_would_not_run_is_caught(line):
    assert problem(line, clis()) is not None
