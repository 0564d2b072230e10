"""Shared fixtures. Real servers live in tests/servers.py (Dovecot, SMTP) and tests/pg.py (PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e import Install

pytest_plugins = ["servers", "pg"]


@pytest.fixture
def install(tmp_path: Path, database_url: str | None) -> Install:
    """A fresh installation on the embedded default, its database on SQLite or PostgreSQL."""
    return Install(tmp_path, database_url=database_url)
