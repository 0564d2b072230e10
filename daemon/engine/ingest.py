"""One incoming message, top to bottom: parse, classify, load the facts, decide, apply, commit.

DESIGN §4: a message's effects (records and outbox rows) are committed in one transaction
together with its idempotency row, and its attempt row is deleted in the same
transaction; only then does the caller file it. Handling the same message again finds
the idempotency row and creates nothing new.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daemon import events, log
from daemon.core.decide import BouncedFact, Decision, Facts, TokenFact, decide, status_ref
from daemon.engine.apply import ConcurrentChange, Store
from daemon.mail.mailbox import InboxMessage
from models.attempt import Attempt
from models.message import Folder, IncomingMessage
from models.outbox import OutboxRow, message_id_hash
from models.request import Request
from models.state import BLOCKING
from models.statement import Statement
from models.token import ReplyToken, token_hash
from parsers import classify as cl
from parsers.message import ParsedMessage, parse_message
from parsers.ref import format_ref, parse_ref
from parsers.reply import own_message_ids
from parsers.validate import form_domain

if TYPE_CHECKING:
    from daemon.ops.counters import Metrics

MAX_MESSAGE_ID = 300    # longer Message-IDs are keyed by their hash


def masked(msg: ParsedMessage, own_address: str) -> ParsedMessage:
    """One of our own emails come back carries our Message-ID, which maps to a reply code: keep
    only a hash of it, so it reaches no log line and no column (DESIGN §3)."""
    domain = own_address.rpartition("@")[2].lower()
    mid = msg.message_id
    if mid is None or mid.rpartition("@")[2].lower() != domain:
        return msg
    return dataclasses.replace(msg, message_id=f"ours-{message_id_hash(mid)[:16]}@{domain}")


def idempotency_key(msg: ParsedMessage) -> str:
    """DESIGN §4: the Message-ID, or a content hash when there is none."""
    if msg.message_id:
        mid = msg.message_id.strip()
        return "mid:" + (mid if len(mid) <= MAX_MESSAGE_ID else hashlib.sha256(mid.encode("utf-8", "replace")).hexdigest())
    return "sha256:" + msg.content_hash


@dataclass(frozen=True)
class Handled:
    """Where a handled message is filed, and the request it concerns: `ref=` on its later log
    lines, `message.filed` among them (DESIGN §7)."""

    folder: Folder
    ref: str | None = None


@dataclass(frozen=True)
class Ingest:
    """The data path for one message, from bytes to a commit."""

    store: Store
    max_message_size: int
    metrics: Metrics

    def handle(self, item: InboxMessage, raw_hash: str) -> Handled:
        """Everything one message causes, committed at once; returns the folder to file it in.
        Raises on failure: daemon.engine.attempts decides what that costs the message."""
        store = self.store
        msg = masked(parse_message(item.raw), store.renderer.from_addr)
        key = idempotency_key(msg)
        now = store.clock.now()
        seen = _SEEN.first(key=key)
        if seen is not None and seen[0] is not None:
            _, folder, request_id = seen
            _TAKE_LEDGER.rows(raw_hash=raw_hash)
            ref = format_ref(request_id) if request_id else None
            log.event(events.MESSAGE_DUPLICATE, ref=ref, key=item.key, message_id=msg.message_id, folder=folder)
            self.metrics.handled("duplicate")
            return Handled(Folder(folder), ref)
        wf = store.workflow
        intent = cl.classify(msg, partner_domains=wf.partner_domains, own_address=store.renderer.from_addr,
                             dmarc_authserv_id=wf.trusted_authserv_id if wf.require_dmarc_pass else None)
        applier = store.applier(answering=msg, now=now)
        with store.db.atomic():
            ledger = _TAKE_LEDGER.rows(raw_hash=raw_hash)
            if not ledger:
                raise ConcurrentChange(f"message {item.key} was handled meanwhile")
            [(failures, first_seen)] = ledger
            facts = load_facts(intent, msg, item, self.max_message_size, store.renderer.from_addr)
            decision = decide(intent, facts, now, store.workflow)
            req = applier.apply(decision)
            _record(msg, item, key, decision, req, now, attempts=failures + 1, first_seen=first_seen)
        applier.flush_log()
        assert decision.outcome is not None and decision.folder is not None
        ref = req.ref if req is not None else None
        log.event(events.MESSAGE_HANDLED, ref=ref, key=item.key, outcome=decision.outcome.value,
                  folder=decision.folder.value)
        self.metrics.handled(decision.outcome.value)
        return Handled(decision.folder, ref)


def load_facts(intent: cl.Intent, msg: ParsedMessage, item: InboxMessage, max_size: int, own_address: str) -> Facts:
    """What `decide` needs to know from the database about this message, and nothing more."""
    if item.truncated:
        return Facts(msg, truncated_size=item.size, max_message_size=max_size,
                     concerns=concerned(msg, own_address))
    match intent:
        case cl.Ignore() | cl.Refuse():
            return Facts(msg, concerns=concerned(msg, own_address))
        case cl.NewRequest():
            domain = form_domain(intent.form)
            return Facts(msg, open_ref=_open_ref(domain) if domain else None)
        case cl.Reply():
            tokens = _tokens(intent) if intent.tokens or intent.thread_ids else ()
            if tokens:
                return Facts(msg, tokens=tokens)
            # No code: the request its line or subject names, for a partner told how to answer.
            ref = intent.command.ref if intent.command and intent.command.ref else None
            return Facts(msg, request=_request(ref or next(iter(intent.subject_refs), None)))
        case cl.CommandMail():
            return Facts(msg, request=_request(status_ref(intent, msg)))
        case cl.Bounce() if intent.bounced_message_ids:
            hashes = [message_id_hash(i) for i in intent.bounced_message_ids]
            row = OutboxRow.select().where(OutboxRow.message_id_hash.in_(hashes)).first()
            if row is None:
                return Facts(msg)
            req = Request.get_or_none(Request.id == row.request_id) if row.request_id else None
            return Facts(msg, bounced=BouncedFact(row.kind, row.recipient, req))
    return Facts(msg)


def _tokens(intent: cl.Reply) -> tuple[TokenFact, ...]:
    """The reply tokens the message carries, by their hash or by the hash of our Message-ID they
    came in, in the order the message carried them."""
    by_token = [token_hash(t) for t in intent.tokens]
    by_id = [message_id_hash(i) for i in intent.thread_ids]
    found = (ReplyToken.select(ReplyToken, Request).join(Request)
             .where(ReplyToken.token_hash.in_(by_token) | ReplyToken.message_id_hash.in_(by_id)))
    order = {h: i for i, h in enumerate([*by_token, *by_id])}
    tokens = sorted(found, key=lambda tok: min(order.get(tok.token_hash, len(order)),
                                               order.get(tok.message_id_hash, len(order))))
    return tuple(TokenFact(tok, tok.request) for tok in tokens)


def concerned(msg: ParsedMessage, own_address: str) -> Request | None:
    """The request a message is about though it acts on none (an auto-reply, a forgery): the one
    whose email it answers (our Message-ID in its In-Reply-To or References), else the one its
    subject names. It puts `ref=` on the message's log lines (DESIGN §7) and acts on nothing."""
    ours = own_message_ids(msg, own_address.rpartition("@")[2])
    if ours:
        row = (OutboxRow.select(OutboxRow.request_id)
               .where(OutboxRow.message_id_hash.in_([message_id_hash(i) for i in ours])
                      & OutboxRow.request_id.is_null(False))
               .first())
        if row is not None:
            return Request.get_or_none(Request.id == row.request_id)
    return _request(next(iter(cl.subject_refs(msg)), None))


def _request(ref: str | None) -> Request | None:
    req_id = parse_ref(ref) if ref else None
    return Request.get_or_none(Request.id == req_id) if req_id else None


def _open_ref(domain: str) -> str | None:
    row = _OPEN_REQUEST.first(domain=domain)
    return format_ref(row[0]) if row else None


def _record(msg: ParsedMessage, item: InboxMessage, key: str, decision: Decision, req: Request | None,
            now: dt.datetime, *, attempts: int, first_seen: dt.datetime) -> None:
    """The idempotency row; a row another process marked handled meanwhile means it won the race."""
    assert decision.outcome is not None and decision.folder is not None
    rows = _RECORD.rows(key=key, message_id=msg.message_id, sender=(msg.sender or "")[:320] or None,
                        subject=msg.subject[:1000], size=item.size, received_at=first_seen, handled_at=now,
                        outcome=decision.outcome.value, folder=decision.folder.value,
                        request_id=req.id if req is not None else None, attempts=attempts, last_error=None,
                        mailbox_key=item.key)
    if not rows:
        raise ConcurrentChange(f"message {item.key} was handled meanwhile")


# The statements every message runs, their SQL built once (models.statement).
_SEEN = Statement(lambda s: IncomingMessage
                  .select(IncomingMessage.handled_at, IncomingMessage.folder, IncomingMessage.request_id)
                  .where(IncomingMessage.key == s.key).limit(1))
_TAKE_LEDGER = Statement(lambda s: Attempt.delete().where(Attempt.raw_hash == s.raw_hash)
                         .returning(Attempt.failures, Attempt.first_seen))
_OPEN_REQUEST = Statement(lambda s: Request.select(Request.id)
                          .where((Request.account_domain == s.domain)
                                 & Request.state.in_([state.value for state in BLOCKING]))
                          .limit(1))
_HANDLED = ("handled_at", "outcome", "folder", "request_id", "attempts", "last_error", "mailbox_key")
_RECORD = Statement(lambda s: IncomingMessage
                    .insert(key=s.key, message_id=s.message_id, sender=s.sender, subject=s.subject, size=s.size,
                            received_at=s.received_at, **{name: getattr(s, name) for name in _HANDLED})
                    .on_conflict(conflict_target=[IncomingMessage.key],
                                 update={getattr(IncomingMessage, name): getattr(s, name) for name in _HANDLED},
                                 where=IncomingMessage.handled_at.is_null())
                    .returning(IncomingMessage.id))
