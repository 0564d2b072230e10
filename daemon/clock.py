"""The one source of time. Everything asks `app.clock.now()`; pure code takes `now`."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

UTC = dt.timezone.utc


def iso(value: dt.datetime | None) -> str | None:
    """The one spelling of a time for people and JSON: UTC, ISO 8601, to the second."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """An aware UTC datetime."""


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)


class FixedClock:
    """A clock tests set and advance, so a 90-day expiry takes no real time."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, delta: dt.timedelta) -> None:
        self._now += delta

    def set(self, when: dt.datetime) -> None:
        self._now = when


class OffsetClock:
    """The system clock shifted by a fixed offset: lets a subprocess test live in the future."""

    def __init__(self, offset: dt.timedelta) -> None:
        self.offset = offset

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC) + self.offset
