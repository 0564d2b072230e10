"""A real PostgreSQL for the tests: Debian's package, initdb in a temp dir, a free loopback port.

One server per test session; each test gets a fresh database cloned from a template
that already holds the migrated schema (procrastinate's conftest does the same),
which takes milliseconds. The `database_url` fixture is parametrized, so every test
that uses a database runs on SQLite and on PostgreSQL; `--db sqlite` or `--db
postgresql` narrows it for a quick local run.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from servers import HOST, free_port

TEMPLATE = "smartacct_template"
BACKENDS = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--db", choices=BACKENDS, action="append",
                     help="run database tests on this backend only (default: both)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("db") or list(BACKENDS)
        metafunc.parametrize("db_backend", chosen, scope="session")


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"PostgreSQL's {name} is not installed: run scripts/install-system-deps.sh")
    return found[-1]


class Postgres:
    """A private PostgreSQL server; runs as the `postgres` user because it refuses to run as root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.user = "smartacct"
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self._as, *cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")

    def start(self) -> None:
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        # Tests want speed, not durability: fsync off is fine for a throwaway cluster.
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "start",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses={HOST} -c fsync=off "
                        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")

    def stop(self) -> None:
        subprocess.run([*self._as, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{HOST}:{self.port}/{dbname}"

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def make_template(self) -> None:
        from models.db import open_database

        self.sql(f"CREATE DATABASE {TEMPLATE}")
        open_database(self.url(TEMPLATE)).close()

    def fresh_database(self) -> str:
        """A new database with the schema in place, cloned from the template."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        for attempt in range(50):  # the template is briefly busy while a clone is made
            try:
                self.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
                break
            except Exception as exc:  # psycopg.errors.ObjectInUse: someone holds the template
                if "being accessed" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05)
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    server = Postgres(root)
    try:
        server.start()
        server.make_template()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(db_backend: str, request: pytest.FixtureRequest) -> str | None:
    """None means the installation's own SQLite file; else a fresh PostgreSQL database."""
    if db_backend == "sqlite":
        return None
    server: Postgres = request.getfixturevalue("postgres")
    return server.fresh_database()
