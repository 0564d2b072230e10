"""The exceptions smartacct raises, so callers catch our types, never a library's.

    SmartacctError
     ├── ConfigError            a bad or unknown config key; the CLI exits with status 2
     ├── MailboxError           the inbox could not be read or a message not filed
     │    └── MailboxAuthError  the server refused our credentials (retrying will not help)
     └── DeliveryError          an outgoing email was not accepted
          ├── TemporaryFailure  a 4xx answer to one email: retry that email with backoff
          │    └── SessionFailure  no session at all (connect, TLS, login, token command, 421,
          │                        a lost connection): every email would fail alike, so the
          │                        drain stops and the transport backs off; no email is charged
          └── PermanentFailure  a 5xx answer to one email: fail that outbox row at once

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
    """Worth retrying: the server answered 4xx to this email."""


class SessionFailure(TemporaryFailure):
    """Worth retrying, but not email by email: the session itself could not be had or was lost."""


class PermanentFailure(DeliveryError):
    """Not worth retrying: the server refused the email or a recipient (5xx)."""

