"""How outgoing mail leaves: the Transport protocol and the Maildir backend (DESIGN §5).

A transport opens a session per outbox drain, so many emails share one SMTP
connection; send() raises TemporaryFailure, SessionFailure or PermanentFailure
(daemon.errors). After a SessionFailure the transport's `backoff` says when to try again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from typing import Protocol, Sequence

SESSION_BACKOFF_START = dt.timedelta(seconds=5)
SESSION_BACKOFF_CAP = dt.timedelta(minutes=5)


class SessionBackoff:
    """When a transport may be tried again after session failures in a row: doubling from 5 s
    to 5 min, the upper half jittered, so instances sharing a dead server do not knock in step."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.failures = 0
        self.until: dt.datetime | None = None
        self._rng = rng or random.Random()

    def ready(self, now: dt.datetime) -> bool:
        return self.until is None or now >= self.until

    def failed(self, now: dt.datetime) -> dt.datetime:
        self.failures += 1
        full = min(SESSION_BACKOFF_CAP, SESSION_BACKOFF_START * 2 ** min(self.failures - 1, 20))
        self.until = now + full / 2 + full / 2 * self._rng.random()
        return self.until

    def succeeded(self) -> bool:
        """Forget earlier failures; True when there were any (the transport is back)."""
        was_failing, self.failures, self.until = self.failures > 0, 0, None
        return was_failing


class Session(Protocol):
    def send(self, raw: bytes, sender: str, recipients: Sequence[str], message_id: str) -> None:
        """Hand one finished email over; raises TemporaryFailure, SessionFailure or PermanentFailure."""


class Transport(Protocol):
    backoff: SessionBackoff

    def session(self) -> contextlib.AbstractContextManager[Session]:
        """One connection (or open directory) reused for every send inside it."""
