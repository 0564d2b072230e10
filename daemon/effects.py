"""Writing a decision down: state changes, timeline events, reply tokens and outbox rows.

An `Effects` lives for one transaction. Log lines are collected and written only
after the commit (`flush_log`), so the log never reports a change that was rolled back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from daemon import log
from daemon.render import Renderer
from daemon.workflow import Mail, Transition
from models.event import Event
from models.outbox import OutboxRow, OutboxState
from models.request import Request
from models.token import ReplyToken, new_token, token_hash
from parsers.message import ParsedMessage

# Event names for the log and the timeline, per action (DESIGN §7).
TRANSITION_EVENTS = {
    "confirm": "request.confirmed",
    "cancel": "request.cancelled",
    "accept": "request.accepted",
    "decline": "request.declined",
    "expire": "request.expired",
    "lapse": "request.lapsed",
}


# Answers to incoming mail: the only emails a mail loop can multiply, so the only ones the
# loop guard may drop. Emails a transition sends are bounded by the state machine.
ANSWER_KINDS = frozenset({"rejection", "help", "status", "late_reply"})
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


class ConcurrentChange(Exception):
    """The request changed under us (another instance or the CLI): roll back and retry."""


@dataclass
class Effects:
    renderer: Renderer
    now: dt.datetime
    answering: ParsedMessage | None = None      # the incoming email our answers thread to
    max_per_hour: int = 0                       # loop guard: answers to one address per hour (0: off)
    logs: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    queued: int = 0

    def log(self, name: str, level: int = logging.INFO, **fields: Any) -> None:
        self.logs.append((level, name, fields))

    def warn(self, name: str, **fields: Any) -> None:
        self.log(name, logging.WARNING, **fields)

    def flush_log(self) -> None:
        for level, name, fields in self.logs:
            log.event(name, level, **fields)
        self.logs.clear()

    def event(self, req: Request, name: str, **detail: Any) -> None:
        Event.create(request_id=req.id, at=self.now, name=name, detail_json=json.dumps(detail, default=str))

    def apply(self, req: Request, t: Transition, **log_fields: Any) -> None:
        """Compare-and-set on the state, so two deciders can never both apply a transition."""
        updated = (Request.update(**t.changes)
                   .where((Request.id == req.id) & (Request.state == t.old_state.value))
                   .execute())
        if updated != 1:
            raise ConcurrentChange(f"{req.ref} left {t.old_state.value}")
        for column, value in t.changes.items():
            setattr(req, column, value)
        name = TRANSITION_EVENTS[t.action.value]
        self.event(req, name, **{k: v for k, v in log_fields.items() if k != "ref"})
        self.log(name, ref=req.ref, state=t.new_state.value, **log_fields)
        for mail in t.mails:
            self.send(mail, req)

    def suppressed(self, mail: Mail) -> str | None:
        """The loop guard (DESIGN §3): why an answer must not go out now, or None."""
        if mail.kind not in ANSWER_KINDS:
            return None
        recent = OutboxRow.select().where((OutboxRow.recipient == mail.to) & (OutboxRow.created_at > self.now - HOUR))
        if self.max_per_hour and recent.count() >= self.max_per_hour:
            return "rate_limit"
        if mail.topic and OutboxRow.select().where(
                (OutboxRow.recipient == mail.to) & (OutboxRow.topic == mail.topic)
                & (OutboxRow.created_at > self.now - DAY)).exists():
            return "same_answer_today"
        return None

    def send(self, mail: Mail, req: Request | None, *, lang: str | None = None) -> OutboxRow | None:
        """Render `mail` now and queue it; the bytes and Message-ID are final from here on."""
        reason = self.suppressed(mail)
        if reason is not None:
            self.warn("email.suppressed", ref=req.ref if req is not None else None, kind=mail.kind, to=mail.to,
                      reason=reason)
            return None
        token = new_token() if mail.party else None
        ref = req.ref if req is not None else None
        domain = self.renderer.from_addr.rpartition("@")[2]
        local = token or secrets.token_hex(12)
        message_id = f"{local}.{(ref or 'sa').lower()}@{domain}"
        if token is not None and req is not None:
            ReplyToken.create(request=req.id, token_hash=token_hash(token), party=mail.party,
                              actions=" ".join(mail.actions), issued_for_state=req.state, issued_at=self.now)
        threading = self.answering if mail.thread else None
        email = self.renderer.compose(
            mail.kind, lang or (req.language if req is not None else "en"),
            {"ref": ref, "request": req, **mail.extra},
            to=[mail.to], message_id=message_id, date=self.now,
            in_reply_to=threading.message_id if threading else None,
            references=threading.references if threading else (),
            token=token,
            auto_submitted="auto-replied" if threading else "auto-generated",
        )
        row = OutboxRow.create(request_id=req.id if req is not None else None, kind=mail.kind,
                               recipient=mail.to, message_id=message_id, raw=email.raw,
                               state=OutboxState.queued.value, created_at=self.now, next_try_at=self.now,
                               topic=mail.topic)
        if req is not None:
            self.event(req, "email.queued", kind=mail.kind, to=mail.to, outbox=row.id)
        self.queued += 1
        return row
