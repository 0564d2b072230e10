"""Shared fixtures. Real servers live in tests/servers.py (Dovecot, SMTP) and tests/pg.py (PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e import Install
from seeds import replay_hint

pytest_plugins = ["servers", "pg"]


def pytest_report_header() -> str:
    return replay_hint()


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
