"""Shared fixtures. Real servers live in tests/servers.py (Dovecot, SMTP) and tests/pg.py (PostgreSQL).

Servers start once per session where they can: one PostgreSQL (a fresh database per test) and
one Dovecot (no users and no mail left from the test before); relays start per test, in
milliseconds. Two marks say what a test needs beyond that:

- `@pytest.mark.both_databases`: the test exercises the database layer, so it runs on SQLite
  and on PostgreSQL; without it a database test runs on SQLite (the rule: tests/pg.py).
- `@pytest.mark.private_dovecot`: the test stops or restarts Dovecot, so it gets its own.
"""

from __future__ import annotations

import compileall
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from e2e import Install
from seeds import SOAK, replay_hint

# Hypothesis is deterministic by default, so CI is green every time; SMARTACCT_SOAK=1 draws fresh
# examples, more of them. A failure prints how to replay it (print_blob). No deadline and no
# too_slow check: both measure wall time, which a busy CI machine makes flaky.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("soak", derandomize=False, max_examples=1_000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("soak" if SOAK else "ci")

pytest_plugins = ["servers", "pg"]


def pytest_report_header() -> str:
    return replay_hint()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Bytecode for the project's own packages, written once here: every `smartacct` the tests start
    (hundreds of daemons and CLI calls) then loads it instead of compiling its modules again, which
    it would where PYTHONDONTWRITEBYTECODE is set (as on this machine). Python checks each file's
    timestamp, so an edited module is compiled afresh."""
    root = Path(__file__).resolve().parent.parent
    for package in ("daemon", "models", "parsers"):
        compileall.compile_dir(root / package, quiet=1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Every failed test says which seed to replay it with."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.append(("seed", replay_hint()))


@pytest.fixture
def install(tmp_path: Path, database_url: str | None) -> Install:
    """A fresh installation on the embedded default, its database on SQLite or PostgreSQL."""
    return Install(tmp_path, database_url=database_url)
