"""One incoming message, top to bottom: parse, classify, decide, commit, then say where to file it.

DESIGN §4: a message's effects (records and outbox rows) are committed in one
transaction together with its idempotency row; only then does the caller file it.
Handling the same message again finds that row and creates nothing new.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import peewee

from daemon import log
from daemon.effects import ConcurrentChange, Effects
from daemon.mailbox import Folder, InboxMessage
from daemon.workflow import (
    KEYWORD_ACTIONS, Mail, Refusal, authorize, new_request_changes, parties, review_mails, transition,
)
from models.attempt import Attempt
from models.message import IncomingMessage, Outcome
from models.outbox import OutboxRow
from models.request import Request, parse_ref
from models.state import BLOCKING, State
from models.token import ReplyToken, token_hash
from parsers import classify as cl
from parsers.form import FIELDS, label
from parsers.message import ParsedMessage, parse_message
from parsers.reply import Keyword
from parsers.validate import Problem, ValidRequest, request_language, validate

if TYPE_CHECKING:
    from daemon.app import App


@dataclass(frozen=True)
class Handled:
    """What handling one message came to: its outcome, where to file it, the request it touched."""

    outcome: Outcome
    folder: Folder
    request_id: int | None = None


def idempotency_key(msg: ParsedMessage) -> str:
    """DESIGN §4: the Message-ID, or a content hash when there is none."""
    if msg.message_id:
        mid = msg.message_id.strip()
        return "mid:" + (mid if len(mid) <= 300 else hashlib.sha256(mid.encode("utf-8", "replace")).hexdigest())
    return "sha256:" + msg.content_hash


def handle(app: App, item: InboxMessage, raw_hash: str) -> Folder:
    """Everything one message causes, committed at once with its idempotency row; returns the
    folder to file it in. Its attempt row (written by daemon.attempts before parsing) is
    deleted in the same transaction. Raises on failure: daemon.attempts decides what that costs."""
    msg = parse_message(item.raw)
    key = idempotency_key(msg)
    now = app.clock.now()
    seen = IncomingMessage.get_or_none(IncomingMessage.key == key)
    if seen is not None and seen.handled_at is not None:
        Attempt.delete().where(Attempt.raw_hash == raw_hash).execute()
        log.event("message.duplicate", key=item.key, message_id=msg.message_id, folder=seen.folder)
        app.metrics.handled("duplicate")
        return Folder(seen.folder)
    effects = Effects(app.renderer, now, answering=msg,
                      max_per_hour=app.config.workflow.max_emails_per_address_per_hour)
    with app.db.atomic():
        ledger = list(Attempt.delete().where(Attempt.raw_hash == raw_hash)
                      .returning(Attempt.failures, Attempt.first_seen).execute())
        if not ledger:
            raise ConcurrentChange(f"message {item.key} was handled meanwhile")
        if item.truncated:
            result = _too_large(app, effects, msg, item.size)
        else:
            intent = cl.classify(msg, partner_domains=app.config.workflow.partner_domains,
                                 own_address=app.renderer.from_addr)
            result = HANDLERS[type(intent)](app, effects, msg, intent)
        _record(msg, item, key, result, now, attempts=ledger[0].failures + 1, first_seen=ledger[0].first_seen)
    effects.flush_log()
    log.event("message.handled", key=item.key, outcome=result.outcome.value, folder=result.folder.value)
    app.metrics.handled(result.outcome.value)
    return result.folder


def _record(msg: ParsedMessage, item: InboxMessage, key: str, result: Handled, now: dt.datetime, *,
            attempts: int, first_seen: dt.datetime) -> None:
    """The idempotency row; a row another process marked handled meanwhile means it won the race."""
    values = {"handled_at": now, "outcome": result.outcome.value, "folder": result.folder.value,
              "request_id": result.request_id, "attempts": attempts, "last_error": None, "mailbox_key": item.key}
    rows = (IncomingMessage
            .insert(key=key, message_id=msg.message_id, sender=(msg.sender or "")[:320] or None,
                    subject=msg.subject[:1000], size=item.size, received_at=first_seen, **values)
            .on_conflict(conflict_target=[IncomingMessage.key],
                         update={getattr(IncomingMessage, k): v for k, v in values.items()},
                         where=IncomingMessage.handled_at.is_null())
            .returning(IncomingMessage.id)
            .execute())
    if not list(rows):
        raise ConcurrentChange(f"message {item.key} was handled meanwhile")


# --- one handler per kind of intent ------------------------------------------------------------

def _new_request(app: App, fx: Effects, msg: ParsedMessage, intent: cl.NewRequest) -> Handled:
    wf = app.config.workflow
    assert msg.sender is not None
    result = validate(intent.form, max_users=wf.max_users, require_customer_in_domain=wf.require_customer_in_domain,
                      default_language=wf.default_language, open_ref_for_domain=_open_ref)
    if isinstance(result, ValidRequest):
        try:
            req = Request.create(
                partner_email=msg.sender, language=result.language, account_name=result.account_name,
                customer_email=result.customer_email, account_domain=result.account_domain,
                note_to_customer=result.note_to_customer, note_to_users=result.note_to_users,
                user_emails_json=_json_list(result.user_emails), **new_request_changes(fx.now, wf))
        except peewee.IntegrityError as exc:   # request_open_domain: another instance took the domain just now
            raise ConcurrentChange(f"a request for {result.account_domain} was created meanwhile") from exc
        fx.event(req, "request.created", partner=msg.sender, message_id=msg.message_id)
        fx.log("request.created", ref=req.ref, partner=msg.sender, domain=req.account_domain,
               customer=req.customer_email)
        for mail in review_mails(msg.sender):
            fx.send(mail, req)
        return Handled(Outcome.request, Folder.processed, req.id)
    lang = request_language(intent.form, wf.default_language)
    values = intent.form.fields
    req = Request.create(
        state=State.rejected.value, partner_email=msg.sender, language=lang,
        account_name=values.get("account_name", "")[:1000], customer_email=values.get("customer_email", "")[:320],
        account_domain=values.get("account_domain", "")[:255], note_to_customer=values.get("note_to_customer", "")[:5000],
        note_to_users=values.get("note_to_users", "")[:5000], created_at=fx.now, updated_at=fx.now, closed_at=fx.now)
    problems = ",".join(f"{p.field or 'form'}:{p.code}" for p in result)
    fx.event(req, "request.rejected", partner=msg.sender, problems=problems)
    fx.log("request.rejected", ref=req.ref, partner=msg.sender, problems=problems)
    fx.send(_rejection(app, msg.sender, result, _echo(intent.form.fields, lang), lang), req)
    return Handled(Outcome.rejected, Folder.rejected, req.id)


def _reply(app: App, fx: Effects, msg: ParsedMessage, intent: cl.Reply) -> Handled:
    sender = msg.sender or ""
    keyword = intent.command.keyword if intent.command else None
    tokens = list(
        ReplyToken.select(ReplyToken, Request).join(Request)
        .where(ReplyToken.token_hash.in_([token_hash(t) for t in intent.tokens]))
    ) if intent.tokens else []
    if not tokens:
        fx.warn("reply.refused", reason=Refusal.no_token.value, sender=sender,
                ref=",".join(intent.subject_refs) or None, keyword=keyword.value if keyword else None)
        return Handled(Outcome.ignored, Folder.rejected)
    if keyword in KEYWORD_ACTIONS:
        return _act_on_reply(app, fx, msg, intent, tokens, keyword)
    # STATUS, HELP, or an answer without a keyword: only ever to a party of the request.
    req = tokens[0].request
    if sender not in parties(req):
        fx.warn("reply.refused", reason=Refusal.wrong_sender.value, ref=req.ref, sender=sender,
                keyword=keyword.value if keyword else None)
        return Handled(Outcome.ignored, Folder.rejected, req.id)
    kind = "status" if keyword is Keyword.STATUS else "help"
    fx.log(f"{kind}.answered", ref=req.ref, to=sender)
    fx.send(Mail(kind, sender, thread=True, extra=_form_extra(app, req.language) if kind == "help" else {}), req)
    return Handled(Outcome.answered, Folder.processed, req.id)


def _act_on_reply(app: App, fx: Effects, msg: ParsedMessage, intent: cl.Reply,
                  tokens: list[ReplyToken], keyword: Keyword) -> Handled:
    """Act with the first token that passes the security rule; otherwise refuse, loudly."""
    wf = app.config.workflow
    sender = msg.sender or ""
    refusals: list[tuple[Refusal, ReplyToken]] = []
    for tok in tokens:
        req: Request = tok.request
        refusal = authorize(tok, req, sender, keyword)
        if refusal is None and intent.subject_refs and req.ref not in intent.subject_refs:
            refusal = Refusal.ref_mismatch
        if refusal is None and wf.require_dmarc_pass and not cl.dmarc_passed(msg, wf.trusted_authserv_id):
            refusal = Refusal.dmarc
        if refusal is not None:
            refusals.append((refusal, tok))
            continue
        t = transition(req, KEYWORD_ACTIONS[keyword], fx.now, wf)
        if t is None:  # the token's state matched, so the table allows it; never expected
            refusals.append((Refusal.stale, tok))
            continue
        used = (ReplyToken.update(used_at=fx.now)
                .where((ReplyToken.id == tok.id) & ReplyToken.used_at.is_null()).execute())
        if used != 1:
            raise ConcurrentChange(f"token of {req.ref} used meanwhile")
        fx.apply(req, t, by=tok.party, sender=sender)
        return Handled(Outcome.reply, Folder.processed, req.id)
    # The most telling refusal: a stale token from the right party deserves a friendly answer.
    refusal, tok = min(refusals, key=lambda r: _REFUSAL_RANK[r[0]])
    req = tok.request
    fx.warn("reply.refused", reason=refusal.value, ref=req.ref, sender=sender, keyword=keyword.value,
            party=tok.party, state=req.state)
    if refusal is Refusal.stale:
        fx.send(Mail("late_reply", sender, thread=True, extra={"keyword": keyword.value}), req)
        return Handled(Outcome.answered, Folder.processed, req.id)
    return Handled(Outcome.ignored, Folder.rejected, req.id)


_REFUSAL_RANK = {Refusal.stale: 0, Refusal.dmarc: 1, Refusal.not_allowed: 2, Refusal.ref_mismatch: 3,
                 Refusal.wrong_sender: 4, Refusal.no_token: 5}


def _command(app: App, fx: Effects, msg: ParsedMessage, intent: cl.CommandMail) -> Handled:
    sender = msg.sender or ""
    cmd = intent.command
    if cmd.keyword is Keyword.HELP:
        fx.log("help.answered", to=sender)
        fx.send(Mail("help", sender, thread=True, extra=_form_extra(app, cmd.language)), None, lang=cmd.language)
        return Handled(Outcome.answered, Folder.processed)
    ref = cmd.ref or next(iter(cl.subject_refs(msg)), None)
    req = Request.get_or_none(Request.id == parse_ref(ref)) if ref else None
    if req is None or sender not in parties(req):
        fx.warn("status.refused", ref=ref, sender=sender, reason="unknown_ref" if req is None else "not_a_party")
        return Handled(Outcome.ignored, Folder.rejected, req.id if req else None)
    fx.log("status.answered", ref=req.ref, to=sender)
    fx.send(Mail("status", sender, thread=True), req)
    return Handled(Outcome.answered, Folder.processed, req.id)


def _bounce(app: App, fx: Effects, msg: ParsedMessage, intent: cl.Bounce) -> Handled:
    """A bounce of one of our emails is linked to its request; never answered (DESIGN §3)."""
    row = (OutboxRow.select().where(OutboxRow.message_id.in_(list(intent.bounced_message_ids))).first()
           if intent.bounced_message_ids else None)
    if row is None:
        fx.log("bounce.ignored", sender=msg.sender, status=intent.status)
        return Handled(Outcome.ignored, Folder.processed)
    req = Request.get_or_none(Request.id == row.request_id) if row.request_id else None
    ref = req.ref if req else None
    permanent = (intent.status or "5").startswith("5")
    fx.warn("bounce.received", ref=ref, kind=row.kind, recipient=row.recipient, status=intent.status)
    if req is not None:
        fx.event(req, "email.bounced", kind=row.kind, recipient=row.recipient, status=intent.status)
        if row.kind == "activation" and permanent:
            fx.send(Mail("delivery_failed", req.partner_email,
                         extra={"failed_recipient": row.recipient, "error": intent.status or "bounced"}), req)
    return Handled(Outcome.ignored, Folder.processed, req.id if req else None)


def _not_a_request(app: App, fx: Effects, msg: ParsedMessage, intent: cl.NotARequest) -> Handled:
    assert msg.sender is not None
    lang = app.config.workflow.default_language
    fx.log("message.not_a_request", sender=msg.sender, subject=msg.subject)
    fx.send(_rejection(app, msg.sender, [Problem(None, "no_form")], [], lang), None, lang=lang)
    return Handled(Outcome.rejected, Folder.rejected)


def _ignore(app: App, fx: Effects, msg: ParsedMessage, intent: cl.Ignore) -> Handled:
    fx.log("message.ignored", reason=intent.reason, sender=msg.sender, message_id=msg.message_id)
    return Handled(Outcome.ignored, Folder.processed)


def _too_large(app: App, fx: Effects, msg: ParsedMessage, size: int) -> Handled:
    limit = app.config.mailbox.max_message_size
    fx.warn("message.too_large", sender=msg.sender, size=size, limit=limit)
    if msg.sender and not msg.is_automatic and cl.sender_allowed(msg.sender, app.config.workflow.partner_domains):
        problem = Problem(None, "too_large", (("max", _human_size(limit)),))
        lang = app.config.workflow.default_language
        fx.send(_rejection(app, msg.sender, [problem], [], lang), None, lang=lang)
        return Handled(Outcome.rejected, Folder.rejected)
    return Handled(Outcome.ignored, Folder.rejected)


HANDLERS: dict[type, Callable[..., Handled]] = {
    cl.NewRequest: _new_request,
    cl.Reply: _reply,
    cl.CommandMail: _command,
    cl.Bounce: _bounce,
    cl.NotARequest: _not_a_request,
    cl.Ignore: _ignore,
}


# --- small pieces ------------------------------------------------------------------------------

def _open_ref(domain: str) -> str | None:
    row = (Request.select(Request.id)
           .where((Request.account_domain == domain) & Request.state.in_([s.value for s in BLOCKING]))
           .first())
    return row.ref if row else None


def _rejection(app: App, to: str, problems: list[Problem], values: list[tuple[str, str]], lang: str) -> Mail:
    topic = "rejection:" + ",".join(sorted({f"{p.field or 'form'}:{p.code}" for p in problems}))
    return Mail("rejection", to, thread=True, topic=topic[:200],
                extra={"problems": problems, "values": values, **_form_extra(app, lang)})


def _echo(fields: dict[str, str], lang: str) -> list[tuple[str, str]]:
    return [(label(f.name, lang), fields[f.name]) for f in FIELDS if f.name in fields]


def _form_extra(app: App, lang: str) -> dict[str, Any]:
    return {"form": app.renderer.blank_form(lang)}


def _human_size(size: int) -> str:
    return f"{size / 1_000_000:g} MB" if size >= 1_000_000 else f"{size / 1000:g} KB"


def _json_list(values: tuple[str, ...]) -> str:
    return json.dumps(list(values))

