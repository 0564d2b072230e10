"""Writing a Decision down, inside the caller's transaction: the request, its timeline, the reply
token used up, the emails rendered into outbox rows (DESIGN §4).

Log lines are collected and written only after the commit (`flush_log`), so the log never
reports a change that was rolled back. Every line about a request carries its `ref=`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import peewee

from daemon import events, log
from daemon.clock import Clock
from daemon.config import WorkflowConfig
from daemon.core.decide import Decision, Log
from daemon.core.guard import ANSWER_KINDS, answer_suppressed
from daemon.core.workflow import Mail
from daemon.events import LogEvent
from daemon.mail.render import Renderer
from models.event import Event
from models.outbox import OutboxRow, OutboxState, message_id_hash
from models.request import Request
from models.statement import create, insert
from models.token import ReplyToken, new_token, token_hash
from parsers.message import ParsedMessage
from parsers.ref import format_ref

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


class ConcurrentChange(Exception):
    """The request changed under us (another instance, a reply, the CLI): roll back and retry."""


@dataclass(frozen=True)
class Store:
    """What writing decisions down takes: the database, the one clock, the renderer and the rules.
    Every engine service that changes requests holds one."""

    db: peewee.Database
    clock: Clock
    renderer: Renderer
    workflow: WorkflowConfig

    def applier(self, answering: ParsedMessage | None = None, now: dt.datetime | None = None) -> Applier:
        return Applier(self.renderer, now or self.clock.now(), self.workflow, answering=answering)

    def apply(self, decision: Decision) -> Request | None:
        """One decision in a transaction of its own, its log lines written after the commit."""
        applier = self.applier()
        with self.db.atomic():
            req = applier.apply(decision)
        applier.flush_log()
        return req


@dataclass
class Applier:
    """Applies decisions at one moment `now`; lives for one transaction."""

    renderer: Renderer
    now: dt.datetime
    workflow: WorkflowConfig
    answering: ParsedMessage | None = None      # the incoming email our answers thread to
    logs: list[tuple[LogEvent, dict[str, Any]]] = field(default_factory=list)
    queued: int = 0

    def apply(self, decision: Decision) -> Request | None:
        """Write `decision`; the request it concerns (created here when it is new)."""
        req = self._request(decision)
        if decision.update is not None:
            assert req is not None
            where = [getattr(Request, column) == value for column, value in decision.update.expect.items()]
            updated = Request.update(**decision.update.changes).where(Request.id == req.id, *where).execute()
            if updated != 1:
                raise ConcurrentChange(f"{req.ref} changed meanwhile")
            for column, value in decision.update.changes.items():
                setattr(req, column, value)
        if decision.token is not None:
            used = (ReplyToken.update(used_at=self.now)
                    .where((ReplyToken.id == decision.token.id) & ReplyToken.used_at.is_null()).execute())
            if used != 1:
                raise ConcurrentChange(f"a token of {req.ref if req else '?'} was used meanwhile")
        for name, detail in decision.events:
            self.event(req, name, **detail)
        for line in decision.logs:
            self.log(line, req)
        for mail in decision.mails:
            self.send(mail, req)
        return req

    def _request(self, decision: Decision) -> Request | None:
        if decision.create is None:
            req = decision.request
            assert req is None or isinstance(req, Request), "the facts load Request rows"
            return req
        try:
            return create(Request, **decision.create)
        except peewee.IntegrityError as exc:   # request_open_domain: another instance took the domain just now
            raise ConcurrentChange(f"a request for {decision.create.get('account_domain')} was created meanwhile") \
                from exc

    # --- what applying writes -------------------------------------------------------------------

    def log(self, line: Log, req: Request | None = None) -> None:
        fields = dict(line.fields)
        if req is not None:
            fields.setdefault("ref", req.ref)
        if "ref" in fields:
            fields = {"ref": fields.pop("ref"), **fields}   # ref first, as admins grep for it
        self.logs.append((line.event, fields))

    def flush_log(self) -> None:
        for ev, fields in self.logs:
            log.event(ev, **fields)
        self.logs.clear()

    def event(self, req: Request | None, name: str, **detail: Any) -> None:
        if req is not None:
            insert(Event, request_id=req.id, at=self.now, name=name, detail_json=json.dumps(detail, default=str))

    def send(self, mail: Mail, req: Request | None) -> int | None:
        """Render `mail` now and queue it; the bytes and Message-ID are final from here on. The
        outbox row's id, or None when the loop guard held it back."""
        reason = self._suppressed(mail)
        if reason is not None:
            self.log(Log(events.EMAIL_SUPPRESSED, {"kind": mail.kind, "to": mail.to, "reason": reason}), req)
            return None
        token = new_token() if mail.party else None
        ref = req.ref if req is not None else None
        # Random, and mapped to the token only through its hash: the id itself says nothing (DESIGN §3).
        message_id = f"{new_token()}@{self.renderer.from_addr.rpartition('@')[2]}"
        id_hash = message_id_hash(message_id)
        if token is not None and req is not None:
            insert(ReplyToken, request=req.id, token_hash=token_hash(token), message_id_hash=id_hash,
                   party=mail.party, actions=" ".join(mail.actions), issued_for_state=req.state, issued_at=self.now)
        threading = self.answering if mail.thread else None
        lang = mail.lang or (req.language if req is not None else self.workflow.default_language)
        extra = {"form": self.renderer.blank_form(lang)} if mail.with_form else {}
        email = self.renderer.compose(
            mail.kind, lang, {"ref": ref, "request": req, **mail.extra, **extra},
            to=[mail.to], message_id=message_id, date=self.now,
            in_reply_to=threading.message_id if threading else None,
            references=threading.references if threading else (),
            token=token,
            actions=mail.actions if token else (),
            auto_submitted="auto-replied" if threading else "auto-generated",
        )
        row_id = insert(OutboxRow, request_id=req.id if req is not None else None, kind=mail.kind,
                        recipient=mail.to, message_id_hash=id_hash, body=email.raw, state=OutboxState.queued.value,
                        created_at=self.now, next_try_at=self.now, topic=mail.topic)
        if req is not None:
            self.event(req, "email.queued", kind=mail.kind, to=mail.to, outbox=row_id)
        self.queued += 1
        return row_id

    def _suppressed(self, mail: Mail) -> str | None:
        """Load what the loop guard needs (only for answers) and ask it."""
        if mail.kind not in ANSWER_KINDS:
            return None
        to_them = OutboxRow.recipient == mail.to
        last_hour = OutboxRow.select().where(to_them & (OutboxRow.created_at > self.now - HOUR)).count()
        same_topic = bool(mail.topic) and OutboxRow.select().where(
            to_them & (OutboxRow.topic == mail.topic) & (OutboxRow.created_at > self.now - DAY)).exists()
        return answer_suppressed(mail, last_hour, same_topic, self.workflow.max_emails_per_address_per_hour)


def ref_of(request_id: int | None) -> str | None:
    return format_ref(request_id) if request_id else None
