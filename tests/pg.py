"""A real PostgreSQL for the tests: Debian's package, initdb in a temp dir, a free loopback port.

One server per test session; each test gets a fresh database cloned from a template
that already holds the migrated schema (procrastinate's conftest does the same),
which takes milliseconds, and dropped when the test ends.

The database matrix. A test that uses `database_url` (or `install`, built on it) runs
on SQLite, the embedded default, unless it is marked `@pytest.mark.both_databases`
(on the test or as a module's `pytestmark`): then it runs on SQLite and on PostgreSQL.
The mark goes where the database layer itself is exercised, where the backends can
differ: migrations, locks and concurrency (SKIP LOCKED, advisory locks, several
instances), the outbox claim, compare-and-set state changes, the ingest transaction
and its uniqueness rules, quarantine and attempt rows, queries over time (the checks,
windows, the hourly cap) and paging. A test that drives parsing, rendering, replies or
CLI output through the daemon stores and reads rows as every other test does, so
SQLite is enough there; each kind of database work it does is also done by a marked
test. Tests that need PostgreSQL alone take the `postgres` fixture.

`--db sqlite` / `--db postgresql` (repeatable) runs every database test on the backends
named instead, marked or not: `--db sqlite --db postgresql` is the full matrix.
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
                     help="run every database test on this backend (repeatable; default: SQLite, "
                          "and PostgreSQL too for tests marked both_databases)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_databases: the test exercises the database layer, so it runs "
                                       "on SQLite and on PostgreSQL (tests/pg.py)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("db")
        if not chosen:
            marked = metafunc.definition.get_closest_marker("both_databases") is not None
            chosen = list(BACKENDS) if marked else ["sqlite"]
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
                # FILE_COPY: copies the template's files instead of writing every block to the WAL.
                self.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
                break
            except Exception as exc:  # psycopg.errors.ObjectInUse: someone holds the template
                if "being accessed" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database fresh_database() made, whoever is still connected (a killed daemon's session)."""
        self.sql(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


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
def database_url(db_backend: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None means the installation's own SQLite file; else a fresh PostgreSQL database,
    dropped after the test (hundreds of 8 MB clones otherwise fill the disk)."""
    if db_backend == "sqlite":
        yield None
        return
    server: Postgres = request.getfixturevalue("postgres")
    url = server.fresh_database()
    yield url
    server.drop_database(url)
