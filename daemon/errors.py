"""The exceptions smartacct raises, so callers catch our types, never a library's.

                                 exit  raised when
    SmartacctError                  1    (the base: never raised itself)
     ├── ConfigError                2    a config key is unknown, missing or malformed
     ├── DatabaseError              1    the database cannot be opened where database.url points
     │    └── NotCreated            1    an admin command found no database of ours there: it
     │                                   never makes a second, empty installation
     ├── LogFileError               1    the log file cannot be opened where logging.file points
     ├── MailboxError               1    the inbox could not be read or a message not filed
     │    └── MailboxAuthError      1    the server refused our credentials (retrying will not help)
     ├── DeliveryError              1    an outgoing email was not accepted
     │    ├── TemporaryFailure      1    a 4xx answer to one email: retry that email with backoff
     │    │    └── SessionFailure   1    no session at all (connect, TLS, login, token command, 421,
     │    │                              a lost connection, an outbox folder we cannot write): every
     │    │                              email would fail alike, so the drain stops and the
     │    │                              transport backs off; no email is charged
     │    └── PermanentFailure      1    a 5xx answer to one email: fail that outbox row at once
     ├── TokenCommandError          1    the oauth2_token_command failed or printed no token (the
     │                                   mailbox says it as MailboxAuthError, SMTP as SessionFailure)
     ├── AdminError                 1    an admin command cannot do what was asked: an unknown
     │                                   reference, a request that is not open, one that keeps changing
     └── MetricsError               1    the metrics endpoint cannot listen on metrics.listen (the
                                         port is in use, or the address is not this host's)

The exit status is each class's `exit_code`, which the CLI returns.

Validation problems are values (parsers.validate.Problem), never exceptions. OS errors
become words here (`os_reason`), so no errno text or class name reaches an admin alone.
"""

from __future__ import annotations

import errno
import os
from typing import ClassVar


class SmartacctError(Exception):
    """Base of every error smartacct raises on purpose; the CLI exits with its `exit_code`."""

    exit_code: ClassVar[int] = 1


class ConfigError(SmartacctError):
    """A config value is missing, unknown or malformed; `key` names it (DESIGN §6)."""

    exit_code = 2

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class DatabaseError(SmartacctError):
    """The database file or its folder cannot be opened or made (not: the server is away for now)."""


class NotCreated(DatabaseError):
    """open_database(create=False) found no database of ours where the config points."""


class LogFileError(SmartacctError):
    """The log file named by logging.file cannot be opened or made; the message says why, in words."""


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


class TokenCommandError(SmartacctError):
    """The token command failed; the message is plain and never carries the token."""


class AdminError(SmartacctError):
    """An admin command refused what was asked: an unknown id, a request in the wrong state."""


class MetricsError(SmartacctError):
    """The metrics endpoint could not listen on metrics.listen (in use, or not this host's address)."""


_OS_REASONS = {
    errno.EACCES: "this user has no permission there",
    errno.EPERM: "this user has no permission there",
    errno.EROFS: "the file system is read-only",
    errno.ENOENT: "it does not exist and cannot be made there",
    errno.ENOTDIR: "part of the path is a file, not a folder",
    errno.EEXIST: "it is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.ENAMETOOLONG: "the path is too long",
    errno.ELOOP: "the path loops through symbolic links",
}


def os_reason(exc: OSError, about: object = None) -> str:
    """What went wrong with a path, in words: "/proc/x: it does not exist and cannot be made there";
    the path is left out when it is `about`, which the caller's message names already."""
    reason = _OS_REASONS.get(exc.errno or 0) or (exc.strerror or str(exc) or "failed").lower()
    if not exc.filename or (about is not None and os.path.abspath(exc.filename) == os.path.abspath(str(about))):
        return reason
    return f"{exc.filename}: {reason}"
