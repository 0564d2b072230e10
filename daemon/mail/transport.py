"""How outgoing mail leaves: the Transport protocol, kept by daemon.mail.smtp and daemon.mail.maildir (DESIGN §5).

A transport opens a session per outbox drain, so many emails share one SMTP
connection; send() raises TemporaryFailure, SessionFailure or PermanentFailure
(daemon.errors). After a SessionFailure the transport's `backoff` says when to try again.
"""

from __future__ import annotations

import contextlib
from typing import Protocol, Sequence

from daemon.mail.backoff import SessionBackoff


class Session(Protocol):
    def send(self, raw: bytes, sender: str, recipients: Sequence[str], key: str) -> str | None:
        """Hand one finished email over; raises TemporaryFailure, SessionFailure or PermanentFailure.
        `key` names the email stably (the hash of its Message-ID), so a resend is recognisably the same.
        Returns the file the email became where the backend writes files (Maildir), else None."""


class Transport(Protocol):
    backoff: SessionBackoff

    def session(self) -> contextlib.AbstractContextManager[Session]:
        """One connection (or open directory) reused for every send inside it."""
