"""How long to leave a mail server alone after failures in a row: one formula for the IMAP
reconnect and for the transport's sessions.

Doubling from a start, capped, with the upper half of each delay jittered, so instances
sharing a dead server do not knock on it in step.
"""

from __future__ import annotations

import datetime as dt
import random

RECONNECT_START = 1.0     # seconds: a lost mailbox connection is tried again at once ...
RECONNECT_CAP = 60.0      # ... and at least once a minute
SESSION_START = dt.timedelta(seconds=5)
SESSION_CAP = dt.timedelta(minutes=5)


def backoff_delay(attempt: int, rng: random.Random, start: float = RECONNECT_START,
                  cap: float = RECONNECT_CAP) -> float:
    """Seconds to wait after failure number `attempt` (1, 2, …): between half and all of
    min(cap, start × 2^(attempt-1))."""
    full = min(cap, start * 2.0 ** min(max(attempt - 1, 0), 30))
    return full / 2 + rng.uniform(0, full / 2)


class SessionBackoff:
    """When a transport may be tried again after session failures in a row, on the app's clock
    (from 5 s to 5 min): the outbox drain asks before opening a session."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.failures = 0
        self.until: dt.datetime | None = None
        self._rng = rng or random.Random()

    def ready(self, now: dt.datetime) -> bool:
        return self.until is None or now >= self.until

    def failed(self, now: dt.datetime) -> dt.datetime:
        self.failures += 1
        delay = backoff_delay(self.failures, self._rng, SESSION_START.total_seconds(), SESSION_CAP.total_seconds())
        self.until = now + dt.timedelta(seconds=delay)
        return self.until

    def succeeded(self) -> bool:
        """Forget earlier failures; True when there were any (the transport is back)."""
        was_failing, self.failures, self.until = self.failures > 0, 0, None
        return was_failing
