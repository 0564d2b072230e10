"""ImapMailbox: the Mailbox protocol (daemon.mail.mailbox) on an IMAP folder, made of the pieces
of this package: one Connection, the UidCursor, Filing, the Waiter and the config check."""

from __future__ import annotations

import math
import ssl
import threading
import time
from typing import Iterator, Sequence

from daemon import events, log
from daemon.config import MailboxConfig
from daemon.mail.backoff import RECONNECT_CAP
from daemon.mail.imap import fetch
from daemon.mail.imap.check import CheckResult, check
from daemon.mail.imap.connection import Connection
from daemon.mail.imap.cursor import Cursor, UidCursor
from daemon.mail.imap.filing import Filing
from daemon.mail.imap.folders import folder_name
from daemon.mail.imap.idle import IDLE_RENEW, Waiter
from daemon.mail.mailbox import Claim, InboxMessage
from models.message import Folder

READ_TIMEOUT = 120.0


class ImapMailbox:
    """Mailbox on an IMAP folder; one connection, reopened with backoff when lost."""

    def __init__(
        self,
        cfg: MailboxConfig,
        cursor: Cursor,
        *,
        connect_timeout: float = 30.0,
        read_timeout: float = READ_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        use_move: bool = True,
        batch_size: int = fetch.FETCH_BATCH,
        idle_renew: float = IDLE_RENEW,
        backoff_cap: float = RECONNECT_CAP,
    ) -> None:
        self._cfg = cfg
        self._batch_size = max(1, batch_size)
        self._cursor = UidCursor(cursor, cfg.folder)
        self._conn = Connection(cfg, self._cursor, connect_timeout=connect_timeout, read_timeout=read_timeout,
                                ssl_context=ssl_context, backoff_cap=backoff_cap)
        self._filing = Filing(self._conn, use_move=use_move, batch_size=self._batch_size)
        self._waiter = Waiter(self._conn, self._cursor, idle_renew=idle_renew)
        self._last_fetch = -math.inf

    # What /healthz and /metrics read, from their own threads.

    @property
    def last_contact(self) -> float | None:
        """time.monotonic() of the last server answer."""
        return self._conn.last_contact

    @property
    def reconnects(self) -> int:
        return self._conn.reconnects

    @property
    def oauth2_failed_at(self) -> float | None:
        """time.monotonic() of the last token command failure."""
        token = self._conn.token_command
        return token.failed_at if token is not None else None

    def unavailable(self) -> str | None:
        """Why the server cannot be reached right now, or None."""
        return self._conn.unavailable()

    # The Mailbox protocol.

    def fetch(self, claim: Claim | None = None) -> Iterator[InboxMessage]:
        """Every message above the cursor in UID order: SIZE first, then each batch claimed and
        the bodies of the claimed ones fetched, one FETCH per batch."""
        self._last_fetch = time.monotonic()
        conn, cursor = self._conn, self._cursor
        conn.ensure()
        low = cursor.last_uid + 1
        conn.do("NOOP", lambda c: c.noop())         # lets the server announce mail delivered since
        uids = cursor.found(int(u) for u in conn.do("UID SEARCH", lambda c: c.search(["UID", f"{low}:*"])))
        limit = self._cfg.max_message_size
        for start in range(0, len(uids), fetch.SIZE_BATCH):
            chunk = uids[start:start + fetch.SIZE_BATCH]
            sizes = fetch.sizes(conn, chunk)
            for batch in fetch.batches(chunk, sizes, limit, self._batch_size):
                if claim is not None:
                    batch = self._claimed(batch, claim)
                    if not batch:
                        continue
                try:
                    for uid, (raw, truncated) in fetch.contents(conn, batch, sizes, limit).items():
                        cursor.offered(uid)
                        yield InboxMessage(key=cursor.key(uid), raw=raw, size=sizes[uid], truncated=truncated)
                finally:
                    cursor.save()

    def _claimed(self, batch: list[int], claim: Claim) -> list[int]:
        """The UIDs of `batch` this instance claims. The others are offered at once: another
        instance holds them, so the saved position stays below them until they are filed."""
        mine = claim([self._cursor.key(uid) for uid in batch])
        kept = []
        for uid in batch:
            if self._cursor.key(uid) in mine:
                kept.append(uid)
            else:
                self._cursor.offered(uid)
        return kept

    def file(self, key: str, folder: Folder) -> None:
        self.file_many([(key, folder)])

    def file_many(self, items: Sequence[tuple[str, Folder]]) -> None:
        """One UID MOVE per target folder for the whole batch."""
        self._conn.ensure()
        by_target: dict[str, list[int]] = {}
        for key, folder in items:
            uid = self._cursor.uid(key)
            if uid is None:
                log.event(events.IMAP_FILE_SKIPPED, key=key, reason="uidvalidity_changed")
                continue  # fetched again under its new key; its database row makes that a duplicate
            by_target.setdefault(folder_name(self._cfg, folder), []).append(uid)
        for target, uids in by_target.items():
            self._filing.file(uids, target)
            for uid in uids:
                self._cursor.filed(uid)

    def restore(self, key: str, message_id: str | None = None, content_hash: str | None = None) -> str:
        """MOVE a message from the quarantine folder back to the inbox folder (`quarantine retry`);
        its new key, or `key` when it has no Message-ID to find it by."""
        uid = self._filing.restore(key, message_id, content_hash)
        return self._cursor.key(uid) if uid is not None else key

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """IDLE (or sleep until the next poll) until new mail, `timeout`, or `stop`; reconnects."""
        self._waiter.wait(timeout, stop, self._last_fetch)

    def close(self) -> None:
        """Save the cursor and log out; safe to call twice."""
        self._cursor.save()
        self._conn.close()

    def check(self) -> CheckResult:
        """Connect, log in, look for the folder; raises MailboxError with a plain explanation."""
        return check(self._conn)
