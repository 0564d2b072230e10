"""The exceptions smartacct raises, so callers catch our types, never a library's.

    SmartacctError
     ├── ConfigError            a bad or unknown config key; the CLI exits with status 2
     ├── MailboxError           the inbox could not be read or a message not filed
     │    └── MailboxAuthError  the server refused our credentials (retrying will not help)
     └── DeliveryError          an outgoing email was not accepted
          ├── TemporaryFailure  4xx answers and network errors: retry with backoff
          └── PermanentFailure  5xx answers: fail the outbox row at once

Validation problems are values (parsers.validate.Problem), never exceptions.
"""

from __future__ import annotations


class SmartacctError(Exception):
    """Base of every error smartacct raises on purpose."""


class ConfigError(SmartacctError):
    """A config value is missing, unknown or malformed; `key` names it (DESIGN §6)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class MailboxError(SmartacctError):
    """The mailbox could not be read, or a message could not be filed."""


class MailboxAuthError(MailboxError):
    """The server refused the login: a wrong password or an expired token."""


class DeliveryError(SmartacctError):
    """An outgoing email was not handed over."""

    def __init__(self, message: str, *, code: int | None = None, recipient: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.recipient = recipient


class TemporaryFailure(DeliveryError):
    """Worth retrying: a 4xx answer, a timeout, a dropped connection."""


class PermanentFailure(DeliveryError):
    """Not worth retrying: the server refused the email or a recipient (5xx)."""
