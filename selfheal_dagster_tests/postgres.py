"""A throwaway PostgreSQL server for tests: the production instance (deploy/dagster.yaml) run
for real. Temp data directory, a free loopback port, trust auth, always stopped.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user (via
``runuser``) on a directory it owns. Without the server binaries the tests that need it are
skipped locally and fail in CI (``CI`` set): there they must run.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from selfheal_dagster_tests.daemon import free_port
from selfheal_dagster_tests.support import ROOT, bound


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str

    def env(self, db: str) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads, for database ``db``."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": db,
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
        }

    def create_db(self) -> str:
        """A fresh database per test: instances never see each other's runs."""
        import psycopg2

        name = f"dagster_{uuid.uuid4().hex[:12]}"
        con = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        con.autocommit = True
        try:
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return name


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    bindir = binaries()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")

    root = Path(tempfile.mkdtemp(prefix="selfheal-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    log = root / "server.log"
    run = lambda *cmd: subprocess.run(  # noqa: E731
        _as_postgres([*map(str, cmd)]),
        check=True,
        capture_output=True,
        text=True,
        timeout=bound(120),
    )
    try:
        run(bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        run(
            bindir / "pg_ctl",
            "-D",
            data,
            "-l",
            log,
            "-w",
            "-t",
            str(int(bound(60))),
            "-o",
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200",
            "start",
        )
        yield Postgres(host="127.0.0.1", port=port, user="postgres")
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=bound(60),
            )
        shutil.rmtree(root, ignore_errors=True)


def production_home(
    tmp_path: Path, server: Postgres, run_monitoring: dict | None = None
) -> tuple[Path, dict[str, str]]:
    """A DAGSTER_HOME holding deploy/dagster.yaml as shipped, and the env it reads;
    ``run_monitoring``: values that replace the shipped ones (a test that owns the waits)."""
    home = tmp_path / "production_dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    if run_monitoring:
        import yaml

        config = yaml.safe_load((home / "dagster.yaml").read_text())
        assert set(run_monitoring) <= set(config["run_monitoring"]), run_monitoring
        config["run_monitoring"].update(run_monitoring)
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home, {"DAGSTER_HOME": str(home), **server.env(server.create_db())}
