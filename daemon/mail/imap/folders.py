"""The IMAP folders a message is filed in (DESIGN §5 mailbox.*_folder), and making them.

Instances starting together race to create the same folders, and an admin may delete
one while the daemon runs: a CREATE answered "it exists already" is a success.
"""

from __future__ import annotations

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from daemon import events, log
from daemon.config import MailboxConfig
from models.message import Folder


def folder_name(cfg: MailboxConfig, folder: Folder) -> str:
    return {
        Folder.processed: cfg.processed_folder,
        Folder.rejected: cfg.rejected_folder,
        Folder.quarantine: cfg.quarantine_folder,
    }[folder]


def inbox_missing(cfg: MailboxConfig, where: str) -> str:
    """The inbox folder is the one folder never created: a typo there would hide all mail."""
    return f"folder {cfg.folder!r} does not exist for {cfg.username} on {where} (mailbox.folder)"


def create_missing(client: IMAPClient, cfg: MailboxConfig) -> None:
    """Create the filing folders that do not exist (yet, or any more)."""
    for folder in Folder:
        name = folder_name(cfg, folder)
        if not client.folder_exists(name):
            create_folder(client, name)


def create_folder(client: IMAPClient, name: str) -> None:
    """CREATE that takes "it exists already" as success: the loser of a race has its folder,
    which is all it wanted."""
    try:
        client.create_folder(name)
    except IMAPClientError as exc:
        if not _already_exists(exc):
            raise
        log.event(events.IMAP_FOLDER_EXISTS, folder=name)
        return
    log.event(events.IMAP_FOLDER_CREATED, folder=name)


def _already_exists(exc: IMAPClientError) -> bool:
    """The RFC 5530 response code, or the bare text of servers that send none (older Dovecot)."""
    text = str(exc).lower()
    return "[alreadyexists]" in text or "mailbox already exists" in text
