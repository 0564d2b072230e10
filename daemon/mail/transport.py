"""How outgoing mail leaves: the Transport protocol and the Maildir backend (DESIGN §5).

A transport opens a session per outbox drain, so many emails share one SMTP
connection; send() raises TemporaryFailure or PermanentFailure (daemon.errors).
"""

from __future__ import annotations

import contextlib
from typing import Protocol, Sequence


class Session(Protocol):
    def send(self, raw: bytes, sender: str, recipients: Sequence[str], message_id: str) -> None:
        """Hand one finished email over; raises TemporaryFailure or PermanentFailure."""


class Transport(Protocol):
    def session(self) -> contextlib.AbstractContextManager[Session]:
        """One connection (or open directory) reused for every send inside it."""
