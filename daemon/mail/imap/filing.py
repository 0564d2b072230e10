"""Moving messages between folders: filing out of the inbox, and back from quarantine.

UID MOVE (RFC 6851) where the server has it, else COPY, \\Deleted and (UID) EXPUNGE. A batch
moves in one command per target folder: a MOVE per message makes Dovecot rewrite its index
every time, which grows with the mailbox (quadratic over a backlog).
"""

from __future__ import annotations

import hashlib

from imapclient.imapclient import DELETED

from daemon.errors import MailboxError
from daemon.mail.imap.connection import Connection
from daemon.mail.imap.folders import create_folder


class Filing:
    """Moves on the one connection; survives what other sessions do to the same folders."""

    def __init__(self, conn: Connection, *, use_move: bool, batch_size: int) -> None:
        self._conn = conn
        self._use_move = use_move
        self._batch_size = batch_size

    def file(self, uids: list[int], target: str) -> None:
        """Move `uids` from the inbox to `target`, once more after what another session did."""
        conn = self._conn
        try:
            self.move(uids, target)
        except MailboxError as exc:
            if conn.client is None:
                raise
            if "EXPUNGEISSUED" in str(exc):
                # Another session (another instance) moved some of them first. A NOOP tells this
                # session about those expunges; the retry then skips the UIDs that are gone.
                conn.do("NOOP", lambda c: c.noop())
            elif not conn.do("LIST", lambda c: c.folder_exists(target)):
                conn.do("CREATE", lambda c: create_folder(c, target))   # deleted while we ran
            else:
                raise
            self.move(uids, target)

    def move(self, uids: list[int], target: str) -> None:
        conn = self._conn
        if self._use_move and b"MOVE" in conn.caps:
            conn.do("MOVE", lambda c: c.move(uids, target))
            return
        conn.do("COPY", lambda c: c.copy(uids, target))
        conn.do("STORE \\Deleted", lambda c: c.add_flags(uids, [DELETED], silent=True))
        if b"UIDPLUS" in conn.caps:
            conn.do("UID EXPUNGE", lambda c: c.uid_expunge(uids))
        else:
            conn.do("EXPUNGE", lambda c: c.expunge())

    def restore(self, key: str, message_id: str | None, content_hash: str | None) -> int | None:
        """MOVE a message from the quarantine folder back to the inbox folder; its new UID there
        when it has a Message-ID to find it by.

        Its UID in quarantine is not the one it had in the inbox, so it is found by its
        Message-ID (UID SEARCH HEADER), or by its content hash when it has none.
        """
        conn = self._conn
        conn.ensure()
        quarantine, inbox = conn.cfg.quarantine_folder, conn.cfg.folder
        conn.do("SELECT", lambda c: c.select_folder(quarantine))
        try:
            uid = self._find(message_id, content_hash)
            if uid is None:
                raise MailboxError(f"message {key} is not in the quarantine folder {quarantine!r} "
                                   f"on {conn.server.where}")
            self.move([uid], inbox)
        finally:
            try:
                conn.do("SELECT", lambda c: c.select_folder(inbox))
            except MailboxError as exc:
                if conn.client is not None:
                    conn.lost(exc)            # the next use reconnects and selects the inbox
        return self._find(message_id, None) if message_id else None

    def _find(self, message_id: str | None, content_hash: str | None) -> int | None:
        """The highest UID in the selected folder with this Message-ID, or with these exact bytes."""
        conn = self._conn
        if message_id:
            found = conn.do("UID SEARCH", lambda c: c.search(["HEADER", "Message-ID", message_id]))
            return max((int(u) for u in found), default=None)
        if not content_hash:
            return None
        uids = sorted(int(u) for u in conn.do("UID SEARCH", lambda c: c.search("ALL")))
        for start in range(0, len(uids), self._batch_size):
            chunk = uids[start:start + self._batch_size]
            data = conn.do("FETCH BODY[]", lambda c: c.fetch(chunk, ["BODY.PEEK[]"]))
            for uid, item in data.items():
                if hashlib.sha256(item.get(b"BODY[]", b"")).hexdigest() == content_hash:
                    return int(uid)
        return None
