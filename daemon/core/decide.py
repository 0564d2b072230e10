"""decide(intent, facts, now, config) -> Decision: what one incoming message causes (DESIGN §1, §3).

Pure: the facts (the requests and tokens a message points to, the open request for a
domain, the email a bounce returns) are loaded before, and the Decision is applied after,
in one transaction (daemon.engine.apply). Nothing here reads the database, the clock or
the environment, so every rule is tested with values in milliseconds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon import events
from daemon.config import WorkflowConfig
from daemon.events import LogEvent
from daemon.core.workflow import (
    CUSTOMER, KEYWORD_ACTIONS, PARTNER, Mail, Refusal, Reminder, RequestLike, TokenLike, Transition, answer,
    delivery_failed, due, new_request_changes, next_due, parties, party_address, party_of, review_mails, transition,
)
from models.message import Folder, Outcome
from models.state import Action, State
from parsers import classify as cl
from parsers.form import FIELDS, label
from parsers.message import ParsedMessage
from parsers.ref import format_ref
from parsers.reply import Keyword, spelling
from parsers.validate import Problem, ValidRequest, request_language, validate

ECHO_MAX = {"account_name": 1000, "customer_email": 320, "account_domain": 255}   # columns of a rejected request
NOTE_ECHO_MAX = 5000
ECHO_LIMIT = 200                                    # characters of each value a rejection shows back
LINE_ECHO = 100                                     # characters of a party's vague line an answer shows back
PARTNER_WORDS = frozenset({Keyword.CONFIRM, Keyword.CANCEL})
CUSTOMER_WORDS = frozenset({Keyword.ACCEPT, Keyword.DECLINE})


@dataclass(frozen=True)
class Log:
    """A log line to write once the transaction commits (DESIGN §7): an event of daemon.events."""

    event: LogEvent
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.event.name

    @property
    def level(self) -> int:
        return self.event.level


@dataclass(frozen=True)
class TokenFact:
    """A reply token found in the message, with the request it belongs to."""

    token: TokenLike
    request: RequestLike


@dataclass(frozen=True)
class BouncedFact:
    """The email of ours a bounce returns, and its request."""

    kind: str
    recipient: str
    request: RequestLike | None


@dataclass(frozen=True)
class Facts:
    """What the database said about the message, read before deciding."""

    msg: ParsedMessage
    tokens: Sequence[TokenFact] = ()          # live or not, in the order the message carried them
    request: RequestLike | None = None        # the request a STATUS names
    open_ref: str | None = None               # an open or active request for the form's domain
    bounced: BouncedFact | None = None
    truncated_size: int | None = None         # over max_message_size: only the header was read
    max_message_size: int = 0
    concerns: RequestLike | None = None       # what an ignored message is about: its ref= in the log


@dataclass(frozen=True)
class Update:
    """Columns of the request to change, only if it is still as it was read (compare-and-set),
    so two deciders (two instances, a reply and a check, the CLI) can never both act."""

    changes: Mapping[str, Any]
    expect: Mapping[str, Any]

    @classmethod
    def of(cls, t: Transition) -> Update:
        return cls(t.changes, {"state": t.old_state.value})


@dataclass(frozen=True)
class Decision:
    """Everything one message, scheduled check or admin command causes, as values.

    `request` names the existing request concerned, `create` holds the columns of a new one.
    `token` is used up with a compare-and-set. A message's decision says where it is filed
    and with which outcome; a check's or an admin's has neither.
    """

    outcome: Outcome | None = None
    folder: Folder | None = None
    request: RequestLike | None = None
    create: Mapping[str, Any] | None = None
    update: Update | None = None
    token: TokenLike | None = None
    mails: tuple[Mail, ...] = ()
    events: tuple[tuple[str, Mapping[str, Any]], ...] = ()   # the request's timeline
    logs: tuple[Log, ...] = ()


def transition_decision(req: RequestLike, t: Transition, detail: Mapping[str, Any], *,
                        outcome: Outcome | None = None, folder: Folder | None = None,
                        token: TokenLike | None = None) -> Decision:
    """A state change with its emails, its timeline event and its log line (DESIGN §1, §7)."""
    return Decision(outcome, folder, request=req, update=Update.of(t), token=token, mails=t.mails,
                    events=((t.event.name, detail),), logs=(Log(t.event, {"state": t.new_state.value, **detail}),))


def decide(intent: cl.Intent, facts: Facts, now: dt.datetime, wf: WorkflowConfig) -> Decision:
    """The one place that says what a message does."""
    msg = facts.msg
    if facts.truncated_size is not None:
        return dataclasses.replace(_too_large(msg, facts.truncated_size, facts.max_message_size, wf),
                                   request=facts.concerns)
    match intent:
        case cl.NewRequest():
            return _new_request(intent, facts, now, wf)
        case cl.Reply():
            return _reply(intent, facts, now, wf)
        case cl.CommandMail():
            return _command(intent, facts)
        case cl.Bounce():
            return _bounce(intent, facts)
        case cl.NotARequest():
            return _rejection_of(msg.sender or "", [Problem(None, "no_form")], [], wf.default_language,
                                 Log(events.MESSAGE_NOT_A_REQUEST, {"sender": msg.sender, "subject": msg.subject}))
        case cl.Ignore():
            return Decision(Outcome.ignored, Folder.processed, request=facts.concerns, logs=(Log(
                events.MESSAGE_IGNORED, {"reason": intent.reason, "sender": msg.sender, "message_id": msg.message_id}),))
        case cl.Refuse():
            return Decision(Outcome.ignored, Folder.rejected, request=facts.concerns, logs=(Log(
                events.MESSAGE_REFUSED, {"reason": intent.reason, "sender": msg.sender, "from_count": msg.from_count,
                                         "message_id": msg.message_id}),))
    raise TypeError(f"no decision for {type(intent).__name__}")


# --- new requests ---------------------------------------------------------------------------------

def _new_request(intent: cl.NewRequest, facts: Facts, now: dt.datetime, wf: WorkflowConfig) -> Decision:
    msg = facts.msg
    sender = msg.sender or ""
    result = validate(intent.form, max_users=wf.max_users, require_customer_in_domain=wf.require_customer_in_domain,
                      default_language=wf.default_language, open_ref_for_domain=lambda _domain: facts.open_ref)
    if isinstance(result, ValidRequest):
        columns = {
            "partner_email": sender, "language": result.language, "account_name": result.account_name,
            "customer_email": result.customer_email, "account_domain": result.account_domain,
            "note_to_customer": result.note_to_customer, "note_to_users": result.note_to_users,
            "user_emails_json": json.dumps(list(result.user_emails)), **new_request_changes(now, wf),
        }
        return Decision(
            Outcome.request, Folder.processed, create=columns, mails=review_mails(sender),
            events=((events.REQUEST_CREATED.name, {"partner": sender, "message_id": msg.message_id}),),
            logs=(Log(events.REQUEST_CREATED, {"partner": sender, "domain": result.account_domain,
                                                 "customer": result.customer_email}),))
    lang = request_language(intent.form, wf.default_language)
    values = intent.form.fields
    columns = {
        "state": State.rejected.value, "partner_email": sender, "language": lang,
        **{name: values.get(name, "")[:limit] for name, limit in ECHO_MAX.items()},
        "note_to_customer": values.get("note_to_customer", "")[:NOTE_ECHO_MAX],
        "note_to_users": values.get("note_to_users", "")[:NOTE_ECHO_MAX],
        "created_at": now, "updated_at": now, "closed_at": now,
    }
    problems = ",".join(f"{p.field or 'form'}:{p.code}" for p in result)
    rejection = _rejection_of(sender, result, _echo(values, lang), lang)
    return Decision(
        Outcome.rejected, Folder.rejected, create=columns, mails=rejection.mails,
        events=((events.REQUEST_REJECTED.name, {"partner": sender, "problems": problems}),),
        logs=(Log(events.REQUEST_REJECTED, {"partner": sender, "problems": problems}),))


def _rejection_of(to: str, problems: Sequence[Problem], values: list[tuple[str, str]], lang: str,
                  *logs: Log) -> Decision:
    """A rejection: every problem, the values we read and the blank form (DESIGN §1 step 2)."""
    topic = "rejection:" + ",".join(sorted({f"{p.field or 'form'}:{p.code}" for p in problems}))
    mail = Mail("rejection", to, thread=True, topic=topic[:200], lang=lang, with_form=True,
                extra={"problems": list(problems), "values": values})
    return Decision(Outcome.rejected, Folder.rejected, mails=(mail,), logs=logs)


def _echo(fields: Mapping[str, str], lang: str) -> list[tuple[str, str]]:
    """What we read, for the partner to correct; each value cut, so a rejection never carries a
    stranger's megabyte of text to whoever the From address names."""
    return [(label(f.name, lang), shortened(fields[f.name], ECHO_LIMIT)) for f in FIELDS if f.name in fields]


def shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _too_large(msg: ParsedMessage, size: int, limit: int, wf: WorkflowConfig) -> Decision:
    log = Log(events.MESSAGE_TOO_LARGE, {"sender": msg.sender, "size": size, "limit": limit})
    if msg.sender and not msg.is_automatic and cl.sender_allowed(msg.sender, wf.partner_domains):
        problem = Problem(None, "too_large", (("max", human_size(limit)),))
        return _rejection_of(msg.sender, [problem], [], wf.default_language, log)
    return Decision(Outcome.ignored, Folder.rejected, logs=(log,))


def human_size(size: int) -> str:
    return f"{size / 1_000_000:g} MB" if size >= 1_000_000 else f"{size / 1000:g} KB"


# --- replies --------------------------------------------------------------------------------------

def _reply(intent: cl.Reply, facts: Facts, now: dt.datetime, wf: WorkflowConfig) -> Decision:
    """A reply acts only for its request's expected party with a live token; a party whose reply
    decides nothing gets one short answer; anyone else gets nothing (DESIGN §3)."""
    sender = facts.msg.sender or ""
    keyword = intent.command.keyword if intent.command else None
    if not facts.tokens:
        req = facts.request
        if keyword in PARTNER_WORDS and req is not None:
            # A fresh email instead of a reply: told how to answer, at the partner address on the
            # request, never at the From address.
            return _answered(req, PARTNER, "no_code", keyword, thread=False)
        return _refused(Refusal.no_token, req, sender, keyword, ref=",".join(intent.subject_refs) or None)
    chosen, refusal = _party_token(intent, facts.tokens, sender)
    if chosen is None:
        return _refused(refusal, facts.tokens[0].request, sender, keyword)
    found, party = chosen
    req, tok = found.request, found.token
    live = tok.used_at is None and tok.issued_for_state == req.state
    if keyword in KEYWORD_ACTIONS:
        own = keyword in (PARTNER_WORDS if party == PARTNER else CUSTOMER_WORDS)
        if own and tok.party == party:
            t = transition(req, KEYWORD_ACTIONS[keyword], now, wf) if live and tok.allows(keyword.value) else None
            if t is not None:
                return transition_decision(req, t, {"by": party, "sender": sender},
                                           outcome=Outcome.reply, folder=Folder.processed, token=tok)
            if not live:   # the request moved on since the email answered: a friendly late answer
                late = Mail("late_reply", sender, thread=True, extra={"keyword": spelling(keyword, req.language)})
                return Decision(Outcome.answered, Folder.processed, request=req, mails=(late,), logs=(
                    Log(events.REPLY_REFUSED, {"reason": Refusal.stale.value, "sender": sender,
                                               "keyword": keyword.value, "party": party, "state": req.state}),))
        return _answered(req, party, "not_yours" if not own else "not_now", keyword, line=intent.line,
                         thread=True)
    if keyword is Keyword.STATUS:
        return Decision(Outcome.answered, Folder.processed, request=req,
                        mails=(Mail("status", party_address(req, party), thread=True),),
                        logs=(Log(events.STATUS_ANSWERED, {"to": party_address(req, party)}),))
    return _answered(req, party, "help" if keyword is Keyword.HELP else "unclear", keyword, line=intent.line,
                     thread=True)


def _party_token(intent: cl.Reply, tokens: Sequence[TokenFact],
                 sender: str) -> tuple[tuple[TokenFact, str] | None, Refusal]:
    """The first token carried whose request the sender is a party of, and which party."""
    refusal = Refusal.wrong_sender
    for found in tokens:
        party = party_of(found.request, sender)
        if party is None:
            continue
        if intent.subject_refs and format_ref(found.request.id) not in intent.subject_refs:
            refusal = Refusal.ref_mismatch   # the subject names another request than the token
            continue
        return (found, party), refusal
    return None, refusal


def _answered(req: RequestLike, party: str, reason: str, keyword: Keyword | None, *, thread: bool,
              line: str = "") -> Decision:
    """Nothing changes; the party learns what we read and which words it may use now."""
    word = spelling(keyword, req.language) if keyword is not None else None
    mail = answer(req, party, reason, thread=thread, line=shortened(line, LINE_ECHO), keyword=word)
    return Decision(Outcome.answered, Folder.processed, request=req, mails=(mail,), logs=(
        Log(events.REPLY_ANSWERED, {"reason": reason, "party": party, "keyword": keyword.value if keyword else None,
                                      "to": mail.to, "allowed": " ".join(mail.actions) or None}),))


def _refused(refusal: Refusal, req: RequestLike | None, sender: str, keyword: Keyword | None,
             **more: Any) -> Decision:
    fields = {"reason": refusal.value, "sender": sender, "keyword": keyword.value if keyword else None, **more}
    return Decision(Outcome.ignored, Folder.rejected, request=req,
                    logs=(Log(events.REPLY_REFUSED, fields),))


# --- commands and bounces -------------------------------------------------------------------------

def _command(intent: cl.CommandMail, facts: Facts) -> Decision:
    sender = facts.msg.sender or ""
    cmd = intent.command
    if cmd.keyword is Keyword.HELP:
        return Decision(Outcome.answered, Folder.processed,
                        mails=(Mail("help", sender, thread=True, with_form=True, lang=cmd.language),),
                        logs=(Log(events.HELP_ANSWERED, {"to": sender}),))
    req = facts.request
    if req is None or sender.lower() not in parties(req):
        reason = "unknown_ref" if req is None else "not_a_party"
        ref = cmd.ref or next(iter(cl.subject_refs(facts.msg)), None)
        return Decision(Outcome.ignored, Folder.rejected, request=req, logs=(
            Log(events.STATUS_REFUSED, {"ref": ref, "sender": sender, "reason": reason}),))
    return Decision(Outcome.answered, Folder.processed, request=req,
                    mails=(Mail("status", sender, thread=True),), logs=(Log(events.STATUS_ANSWERED, {"to": sender}),))


def status_ref(intent: cl.CommandMail, msg: ParsedMessage) -> str | None:
    """The request a STATUS asks about: named on its line, else in the subject."""
    return intent.command.ref or next(iter(cl.subject_refs(msg)), None)


def _bounce(intent: cl.Bounce, facts: Facts) -> Decision:
    """A bounce of one of our emails is linked to its request; never answered (DESIGN §3)."""
    bounced = facts.bounced
    if bounced is None:
        return Decision(Outcome.ignored, Folder.processed,
                        logs=(Log(events.BOUNCE_IGNORED, {"sender": facts.msg.sender, "status": intent.status}),))
    req = bounced.request
    detail = {"kind": bounced.kind, "recipient": bounced.recipient, "status": intent.status}
    permanent = (intent.status or "5").startswith("5")
    tell = delivery_failed(req, bounced.kind, bounced.recipient, intent.status or "bounced") \
        if req is not None and permanent else None
    return Decision(Outcome.ignored, Folder.processed, request=req, mails=(tell,) if tell else (),
                    events=(("email.bounced", detail),) if req is not None else (),
                    logs=(Log(events.BOUNCE_RECEIVED, detail),))


# --- scheduled checks, admins and the outbox decide the same way ------------------------------------

def decide_due(req: RequestLike, now: dt.datetime, wf: WorkflowConfig) -> Decision:
    """What a scheduled check does to a request whose due_at has come (DESIGN §1, §4)."""
    owed = due(req, now, wf)
    if isinstance(owed, Reminder):
        number = owed.reminders_sent
        return Decision(request=req, mails=(owed.mail,),
                        update=Update({"reminders_sent": number, "due_at": owed.due_at, "updated_at": now},
                                      {"reminders_sent": req.reminders_sent, "state": req.state}),
                        events=((events.REMINDER_SENT.name, {"number": number}),),
                        logs=(Log(events.REMINDER_SENT, {"to": req.customer_email, "number": number}),))
    t = transition(req, owed, now, wf) if owed is not None else None
    if t is not None:
        return transition_decision(req, t, {"by": "check"})
    # Nothing owed yet: move the bookmark to the next moment something will be.
    return Decision(request=req, update=Update({"due_at": next_due(req, wf)}, {"state": req.state}))


def decide_cancel(req: RequestLike, reason: str, now: dt.datetime, wf: WorkflowConfig) -> Decision | None:
    """An admin cancels an open request; the parties are told as for CANCEL. None: not open."""
    t = transition(req, Action.cancel, now, wf, by_admin=True, reason=reason)
    if t is None:
        return None
    return transition_decision(req, t, {"by": "admin", **({"reason": reason} if reason else {})})


def decide_refused(req: RequestLike, kind: str, recipient: str, error: str) -> Decision:
    """The SMTP server refused one of our emails for good (5xx): on the timeline, and the same
    rule as a bounce for telling the partner."""
    tell = delivery_failed(req, kind, recipient, error)
    return Decision(request=req, mails=(tell,) if tell else (),
                    events=(("email.refused", {"kind": kind, "recipient": recipient, "error": error[:200]}),),
                    logs=(Log(events.PARTNER_TOLD, {"about": "delivery_failed", "to": req.partner_email}),) if tell else ())
