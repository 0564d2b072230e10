"""Which messages of the inbox folder are done, by UID: the position a restart resumes from.

A UID means something only with the folder's UIDVALIDITY (RFC 3501 §2.3.1.1): when that
changes, every UID saved before is void and the folder is read again from the start
(a message handled before is then a duplicate by its database row, never handled twice).
"""

from __future__ import annotations

import math
from typing import Iterable, Protocol

from daemon import events, log
from daemon.errors import MailboxError


class Cursor(Protocol):
    """Where the inbox was left: stored durably by the caller (the database)."""

    def load(self) -> tuple[int, int] | None:
        """(uidvalidity, last_uid) saved before, or None."""

    def save(self, uidvalidity: int, last_uid: int) -> None:
        """Remember that every yielded UID up to last_uid has been filed."""


def parse_key(key: str) -> tuple[int, int]:
    """"UIDVALIDITY:UID" -> (uidvalidity, uid)."""
    try:
        validity, uid = key.split(":")
        return int(validity), int(uid)
    except ValueError:
        raise MailboxError(f"not an IMAP message key (UIDVALIDITY:UID): {key!r}") from None


class UidCursor:
    """The saved position (UIDVALIDITY, last UID) and the UIDs above it this process knows of.

    The position only moves past a UID once every UID below it is filed: a message that was
    offered but not filed (its commit failed, say) is offered again after a restart.
    """

    def __init__(self, store: Cursor, folder: str) -> None:
        self._store = store
        self._folder = folder
        saved = store.load()
        self.uidvalidity: int | None = saved[0] if saved else None
        self.last_uid = saved[1] if saved else 0
        self._saved = saved
        self._pending: set[int] = set()    # offered, not filed yet
        self._filed: set[int] = set()      # filed, above the saved position
        self.seen_up_to = 0                # the highest UID the last search found

    def selected(self, validity: int) -> None:
        """The folder was (re)selected with this UIDVALIDITY; a new one starts the folder over."""
        if self.uidvalidity is not None and validity != self.uidvalidity:
            log.event(events.IMAP_UIDVALIDITY_CHANGED, folder=self._folder, old=self.uidvalidity,
                      new=validity, action="full_resync")
            self.last_uid = 0
            self.seen_up_to = 0
            self._pending.clear()
            self._filed.clear()
        self.uidvalidity = validity
        self.save()

    def found(self, uids: Iterable[int]) -> list[int]:
        """The new UIDs of a search, in order. Offered ones no longer there were filed by another
        session (another instance): they no longer hold the position back."""
        new = sorted(uid for uid in uids if uid > self.last_uid)
        self.seen_up_to = max(new, default=self.last_uid)
        self._pending &= set(new)
        return new

    def offered(self, uid: int) -> None:
        self._pending.add(uid)

    def filed(self, uid: int) -> None:
        self._pending.discard(uid)
        if uid > self.last_uid:
            self._filed.add(uid)

    def key(self, uid: int) -> str:
        return f"{self.uidvalidity}:{uid}"

    def uid(self, key: str) -> int | None:
        """The UID a key names in this folder, or None when it is from before a UIDVALIDITY change."""
        validity, uid = parse_key(key)
        return uid if validity == self.uidvalidity else None

    def save(self) -> None:
        """Advance to the highest UID below every unfiled one; write it only when it moved."""
        if self.uidvalidity is None:
            return
        ceiling = min(self._pending, default=math.inf)
        done = {uid for uid in self._filed if uid < ceiling}
        if done:
            self.last_uid = max(self.last_uid, max(done))
            self._filed -= done
        position = (self.uidvalidity, self.last_uid)
        if position != self._saved:
            self._store.save(*position)
            self._saved = position
