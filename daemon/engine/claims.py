"""Which instance handles a message, decided before its body is fetched (DESIGN §8).

The mailbox offers each batch of keys before it downloads the batch; this instance takes the
messages' advisory locks ("message:" + key, models.locks) in one statement and the mailbox
fetches only those it got. The lock belongs to the database session, so a killed instance lets
go at once and its messages are taken on another instance's next pass. A claimed message is
handed over to daemon.engine.attempts when it arrives, which keeps its lock until it is filed;
one that never arrives (another instance filed it between the listing and the claim) is let go
when the next batch is claimed, or at the end of the pass.
"""

from __future__ import annotations

from typing import Sequence

import peewee

from daemon import events, log
from models.locks import try_lock_many, unlock_many

PREFIX = "message:"


class Claims:
    """The message locks one ingest pass holds for messages not yet handed over."""

    def __init__(self, db: peewee.Database) -> None:
        self._db = db
        self._waiting: set[str] = set()    # claimed keys whose message has not arrived yet

    def take(self, keys: Sequence[str]) -> set[str]:
        """The keys of this batch this instance handles; the others are left to their holder."""
        self.release()
        got = try_lock_many(self._db, [PREFIX + key for key in keys])
        mine = {key for key in keys if PREFIX + key in got}
        for key in keys:
            if key not in mine:
                log.event(events.MESSAGE_SKIPPED, key=key, reason="claimed_by_another_instance")
        self._waiting = mine
        return mine

    def arrived(self, key: str) -> bool:
        """Hand the message's lock over to its handling; False when this pass never claimed it."""
        if key in self._waiting:
            self._waiting.discard(key)
            return True
        return False

    def release(self) -> None:
        """Let go of the claims whose message never arrived."""
        if self._waiting:
            unlock_many(self._db, [PREFIX + key for key in self._waiting])
            self._waiting = set()
