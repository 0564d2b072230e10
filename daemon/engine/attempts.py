"""The per-message boundary (DESIGN §4): honest attempt counts, poison isolation, races retried.

Before a message is parsed, its attempt row (keyed by the hash of its bytes) says that this
process holds it, in a commit of its own. A message whose row shows that a process died
holding it, or that failed before, is handled in a child process with limits
(daemon.engine.isolate); any other one here, under its CPU budget. Only a failure of the
message's own handling is charged to it; a process killed from outside is not, a race is
retried, and a broken mailbox or database goes up to the loop, which backs off. After
max_attempts charged failures the message is quarantined and the next one is handled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import peewee

from daemon import events, log
from daemon.engine import isolate
from daemon.engine.ingest import Handled, Ingest, concerned, idempotency_key, masked
from daemon.engine.isolate import Isolation
from daemon.engine.apply import ConcurrentChange, Store
from daemon.errors import MailboxError
from daemon.mail.mailbox import InboxMessage
from models.message import Folder
from models.attempt import Attempt
from models.locks import try_lock, unlock
from models.message import IncomingMessage, Outcome
from models.statement import Statement
from parsers.message import ParsedMessage, parse_message

if TYPE_CHECKING:
    from daemon.ops.counters import Metrics

RACE_RETRIES = 5            # a race that does not resolve after this many tries is not a race
HEAD_LIMIT = 262_144        # bytes of header read to describe a quarantined message


@dataclass(frozen=True)
class Claim:
    raw_hash: str
    failures: int           # charged before: the message's own handling failed
    interrupted: int        # a process died holding it

    @property
    def suspect(self) -> bool:
        """Handle it in a child: it may be what stalled or killed a process before."""
        return self.failures > 0 or self.interrupted > 0


@dataclass(frozen=True)
class Tried:
    """One attempt: where it is filed when it is done, else whether it raced and what went wrong."""

    handled: Handled | None = None
    race: bool = False
    error: str = ""


@dataclass(frozen=True)
class Attempts:
    """The per-message boundary: what a message's failures cost it, and where it is handled."""

    store: Store
    ingest: Ingest
    isolation: Isolation
    instance: str             # this process, as it appears in an attempt's holder
    budget: float             # CPU seconds per message, in process
    max_attempts: int
    metrics: Metrics

    def process(self, item: InboxMessage) -> Folder | None:
        """The folder to file `item` in, or None to leave it in the inbox (another instance holds
        it, or it raced too often this pass)."""
        handled = self.handle(item)
        return handled.folder if handled is not None else None

    def handle(self, item: InboxMessage, held: list[str] | None = None, *, claimed: bool = False) -> Handled | None:
        """As process(), with the request the message concerns.

        The message's lock is taken here unless the caller `claimed` it before fetching it
        (daemon.engine.claims). It is released on return, unless `held` is given and there is a
        folder: then the caller releases it once the message is filed, so no other instance can
        take and file it in between (DESIGN §8)."""
        db = self.store.db
        lock = "message:" + item.key
        if not claimed and not try_lock(db, lock):
            log.event(events.MESSAGE_SKIPPED, key=item.key, reason="claimed_by_another_instance")
            return None
        handled = None
        try:
            handled = self._process(item)
            return handled
        finally:
            if held is not None and handled is not None:
                held.append(lock)
            else:
                unlock(db, lock)

    def _process(self, item: InboxMessage) -> Handled | None:
        claim = self.begin(item)
        races = 0
        while True:
            tried = self._attempt(item, claim)
            if tried.handled is not None:
                return tried.handled
            if tried.race:
                races += 1
                if races < RACE_RETRIES:
                    continue
            failures = self._charge(claim, tried.error)
            if failures is None:
                continue   # its row is gone: its effects were committed after all, the next try says where
            if failures >= self.max_attempts:
                return self._quarantine(item, claim, failures, tried.error)
            log.event(events.MESSAGE_FAILED, key=item.key, attempts=failures, error=tried.error)
            self.metrics.handled(Outcome.failed.value)
            claim = replace(claim, failures=failures)
            races = 0

    def _attempt(self, item: InboxMessage, claim: Claim) -> Tried:
        if claim.suspect:
            log.event(events.MESSAGE_ISOLATED, key=item.key, failures=claim.failures, interrupted=claim.interrupted)
            child = self.isolation.run(item, claim.raw_hash)
            if child.result == "unavailable":
                raise peewee.OperationalError(child.error)   # the database, not the message: the loop backs off
            if child.result == "done" and child.folder:
                return Tried(Handled(Folder(child.folder), child.ref))
            return Tried(race=child.result == "race", error=child.error or "")
        try:
            with isolate.budget(self.budget):
                return Tried(self.ingest.handle(item, claim.raw_hash))
        except ConcurrentChange as exc:
            return Tried(race=True, error=str(exc))
        except (MailboxError, peewee.OperationalError, peewee.InterfaceError):
            raise   # the world is broken, not the message
        except isolate.MessageTimeout as exc:
            return Tried(error=str(exc))
        except Exception as exc:  # the per-message boundary: rolled back already; charged by the caller
            return Tried(error=f"{type(exc).__name__}: {exc}")

    def begin(self, item: InboxMessage) -> Claim:
        """Say that this process holds the message, before a byte of it is parsed (DESIGN §4)."""
        raw_hash = hashlib.sha256(item.raw).hexdigest()
        with self.store.db.atomic():
            [(failures, interrupted)] = _BEGIN.rows(raw_hash=raw_hash, key=item.key, me=self.instance,
                                                    now=self.store.clock.now())
        return Claim(raw_hash, failures, interrupted)

    def _charge(self, claim: Claim, error: str) -> int | None:
        """Count a failure of the message's own handling; None when its row is gone (it was handled)."""
        with self.store.db.atomic():
            rows = list(Attempt
                        .update(failures=Attempt.failures + 1, holder=None, held_since=None, last_error=error[:1000])
                        .where(Attempt.raw_hash == claim.raw_hash)
                        .returning(Attempt.failures)
                        .execute())
        return rows[0].failures if rows else None

    def _quarantine(self, item: InboxMessage, claim: Claim, failures: int, error: str) -> Handled:
        """Record it for `quarantine list`, from its header only: the body is what failed."""
        head = masked(_describe(item.raw), self.store.renderer.from_addr)
        key = idempotency_key(head) if head.message_id else "sha256:" + claim.raw_hash
        now = self.store.clock.now()
        req = concerned(head, self.store.renderer.from_addr)
        ref = req.ref if req is not None else None
        values = {"handled_at": now, "outcome": Outcome.quarantined.value, "folder": Folder.quarantine.value,
                  "attempts": failures, "last_error": error[:1000], "mailbox_key": item.key,
                  "request_id": req.id if req is not None else None}
        with self.store.db.atomic():
            (IncomingMessage
             .insert(key=key, message_id=head.message_id, sender=(head.sender or "")[:320] or None,
                     subject=head.subject[:1000], size=item.size, received_at=now, **values)
             .on_conflict(conflict_target=[IncomingMessage.key],
                          update={getattr(IncomingMessage, k): v for k, v in values.items()},
                          where=IncomingMessage.handled_at.is_null())
             .execute())
            Attempt.delete().where(Attempt.raw_hash == claim.raw_hash).execute()
        log.event(events.MESSAGE_QUARANTINED, ref=ref, key=item.key, message_id=head.message_id, sender=head.sender,
                  attempts=failures, error=error)
        self.metrics.handled(Outcome.quarantined.value)
        return Handled(Folder.quarantine, ref)


# The attempt row, written before the message is parsed; a holder other than this process means
# one died holding it.
_BEGIN = Statement(lambda s: Attempt
                   .insert(raw_hash=s.raw_hash, mailbox_key=s.key, holder=s.me, held_since=s.now, first_seen=s.now)
                   .on_conflict(conflict_target=[Attempt.raw_hash],
                                update={Attempt.holder: s.me, Attempt.held_since: s.now, Attempt.mailbox_key: s.key,
                                        Attempt.interrupted: Attempt.interrupted + peewee.Case(
                                            None, [(Attempt.holder.is_null(False) & (Attempt.holder != s.me), 1)], 0)})
                   .returning(Attempt.failures, Attempt.interrupted))


def _describe(raw: bytes) -> ParsedMessage:
    """Message-ID, sender and subject from at most HEAD_LIMIT bytes of header, within a budget."""
    ends = [i for i in (raw.find(b"\r\n\r\n", 0, HEAD_LIMIT), raw.find(b"\n\n", 0, HEAD_LIMIT)) if i >= 0]
    head = raw[:min(ends, default=HEAD_LIMIT)]
    try:
        with isolate.budget(isolate.MESSAGE_BUDGET):
            return parse_message(head)
    except isolate.MessageTimeout:
        return parse_message(b"")
