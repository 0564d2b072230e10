"""What `smartacct config check` finds out about the IMAP server, on a connection of its own."""

from __future__ import annotations

from dataclasses import dataclass

from imapclient.exceptions import IMAPClientError

from daemon.errors import MailboxError
from daemon.mail.connect import describe
from daemon.mail.imap.connection import CONNECTION_ERRORS, Connection, logout
from daemon.mail.imap.folders import inbox_missing


@dataclass(frozen=True)
class CheckResult:
    """What `smartacct config check` can tell the admin about the server."""

    idle: bool
    move: bool
    uidplus: bool


def check(conn: Connection) -> CheckResult:
    """Connect, log in, look for the folder; raises MailboxError with a plain explanation.
    Creates nothing and leaves the daemon's own connection alone."""
    cfg, where = conn.cfg, conn.server.where
    client = conn.login()
    try:
        try:
            exists = client.folder_exists(cfg.folder)
            caps = client.capabilities()
        except CONNECTION_ERRORS as exc:
            raise MailboxError(f"connection to {where} lost: {describe(exc)}") from None
        except IMAPClientError as exc:
            raise MailboxError(f"{where} answered an error: {describe(exc)}") from None
        if not exists:
            raise MailboxError(inbox_missing(cfg, where))
        return CheckResult(idle=b"IDLE" in caps, move=b"MOVE" in caps, uidplus=b"UIDPLUS" in caps)
    finally:
        logout(client)
