"""Shared fixtures. Real servers (Dovecot, SMTP, PostgreSQL) live in tests/servers.py."""

from __future__ import annotations

pytest_plugins = ["servers"]
