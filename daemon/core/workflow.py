"""What each transition does (DESIGN §1) and who may ask for it (DESIGN §3). Pure: no I/O.

`transition()` says which state a request moves to, which columns change and which
emails go to whom; `party_of()` and `allowed_now()` say who may decide what; `due()` says
what a scheduled check owes a request at `now`. The caller applies the result in one
transaction.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from daemon import events
from daemon.config import WorkflowConfig
from daemon.events import LogEvent
from models.state import Action, State, next_state
from parsers.reply import Keyword

PARTNER = "partner"
CUSTOMER = "customer"

# The keywords each kind of email invites as an answer, and who may send them.
PARTNER_REVIEW = (Keyword.CONFIRM.value, Keyword.CANCEL.value)
PARTNER_PENDING = (Keyword.CANCEL.value,)
CUSTOMER_ACTIVATION = (Keyword.ACCEPT.value, Keyword.DECLINE.value)

KEYWORD_ACTIONS = {
    Keyword.CONFIRM: Action.confirm,
    Keyword.CANCEL: Action.cancel,
    Keyword.ACCEPT: Action.accept,
    Keyword.DECLINE: Action.decline,
}


class RequestLike(Protocol):
    id: int
    state: str
    language: str
    partner_email: str
    customer_email: str
    user_emails: list[str]
    created_at: dt.datetime
    review_expires_at: dt.datetime | None
    confirmed_at: dt.datetime | None
    expires_at: dt.datetime | None
    reminders_sent: int


class TokenLike(Protocol):
    id: int
    party: str
    issued_for_state: str
    used_at: dt.datetime | None

    def allows(self, keyword: str) -> bool: ...


@dataclass(frozen=True)
class Mail:
    """One email to write: its template kind, its recipient, and the reply token it carries."""

    kind: str
    to: str
    party: str | None = None              # a reply token is issued for this party...
    actions: tuple[str, ...] = ()         # ...allowing these keywords
    extra: dict[str, Any] = field(default_factory=dict)  # more template context
    thread: bool = False                  # In-Reply-To the message being answered
    topic: str | None = None              # an answer's subject matter: sent to one address once a day
    lang: str | None = None               # its language when no request says it
    with_form: bool = False               # carries the blank request form (help, rejection)


# Log and timeline event of each transition (DESIGN §7).
TRANSITION_EVENTS = {
    Action.confirm: events.REQUEST_CONFIRMED,
    Action.cancel: events.REQUEST_CANCELLED,
    Action.accept: events.REQUEST_ACCEPTED,
    Action.decline: events.REQUEST_DECLINED,
    Action.expire: events.REQUEST_EXPIRED,
    Action.lapse: events.REQUEST_LAPSED,
}


@dataclass(frozen=True)
class Transition:
    action: Action
    old_state: State
    new_state: State
    changes: dict[str, Any]
    mails: tuple[Mail, ...]

    @property
    def event(self) -> LogEvent:
        return TRANSITION_EVENTS[self.action]


class Refusal(enum.StrEnum):
    """Why a reply has no effect (each logged as a WARNING)."""

    no_token = "no_token"
    wrong_sender = "wrong_sender"
    stale = "stale"                 # used already, or the request left the state it was for
    ref_mismatch = "ref_mismatch"   # the token belongs to another request than the subject names


def party_address(req: RequestLike, party: str) -> str:
    return req.partner_email if party == PARTNER else req.customer_email


def party_of(req: RequestLike, sender: str) -> str | None:
    """Which party of the request `sender` is (addresses compared case-insensitively), or None."""
    sender = sender.lower()
    if sender == req.partner_email.lower():
        return PARTNER
    if sender == req.customer_email.lower():
        return CUSTOMER
    return None


def allowed_now(req: RequestLike, party: str) -> tuple[str, ...]:
    """The decisions `party` may take on `req` in its present state (DESIGN §1, §3)."""
    state = State(req.state)
    if party == PARTNER:
        return {State.awaiting_confirmation: PARTNER_REVIEW, State.pending_acceptance: PARTNER_PENDING}.get(state, ())
    return CUSTOMER_ACTIVATION if state is State.pending_acceptance else ()


def answer(req: RequestLike, party: str, reason: str, *, thread: bool, line: str = "",
           keyword: str | None = None) -> Mail:
    """One short answer for a party of `req` whose reply decided nothing: what we understood, the
    words it may use now, with one-click links (DESIGN §3). Sent to the party's stored address."""
    actions = allowed_now(req, party)
    return Mail("answer", party_address(req, party), party if actions else None, actions, thread=thread,
                topic=f"answer:{req.id}:{party}:{reason}:{keyword or ''}",
                extra={"reason": reason, "line": line, "keyword": keyword, "party": party})


def new_request_changes(now: dt.datetime, wf: WorkflowConfig) -> dict[str, Any]:
    review_deadline = now + wf.review_window
    return {
        "state": State.awaiting_confirmation.value,
        "created_at": now,
        "updated_at": now,
        "review_expires_at": review_deadline,
        "due_at": review_deadline,
    }


def review_mails(partner: str) -> tuple[Mail, ...]:
    return (Mail("review", partner, PARTNER, PARTNER_REVIEW, thread=True),)


def transition(req: RequestLike, action: Action, now: dt.datetime, wf: WorkflowConfig,
               *, by_admin: bool = False, reason: str = "") -> Transition | None:
    """The effects of `action` on `req`, or None when the action does not apply to its state."""
    old = State(req.state)
    new = next_state(old, action)
    if new is None:
        return None
    changes: dict[str, Any] = {"state": new.value, "updated_at": now}
    partner, customer = req.partner_email, req.customer_email
    mails: tuple[Mail, ...]
    if action is Action.confirm:
        expires = now + wf.acceptance_window
        changes.update(confirmed_at=now, expires_at=expires, reminders_sent=0,
                       due_at=_pending_due(now, expires, 0, wf))
        mails = (
            Mail("request_complete", partner, PARTNER, PARTNER_PENDING, thread=True),
            Mail("activation", customer, CUSTOMER, CUSTOMER_ACTIVATION),
        )
    elif action is Action.accept:
        changes.update(accepted_at=now, due_at=None)
        mails = (
            Mail("activation_confirmation", partner),
            Mail("welcome", customer, thread=True),
            *(Mail("user_notice", user, extra={"user": user}) for user in req.user_emails),
        )
    elif action is Action.cancel:
        changes.update(closed_at=now, due_at=None)
        extra = {"by_admin": by_admin, "reason": reason}
        mails = (Mail("cancelled_partner", partner, extra=extra, thread=not by_admin),)
        if old is State.pending_acceptance:  # the customer has had an activation email
            mails += (Mail("cancelled_customer", customer, extra=extra),)
    elif action is Action.decline:
        changes.update(closed_at=now, due_at=None)
        # The partner is told; the customer gets a receipt: every decision is acknowledged (DESIGN §3).
        mails = (Mail("declined", partner), Mail("decline_receipt", customer, thread=True))
    elif action is Action.expire:
        changes.update(closed_at=now, due_at=None)
        mails = (Mail("expired_customer", customer), Mail("expired_partner", partner))
    else:  # Action.lapse
        changes.update(closed_at=now, due_at=None)
        mails = (Mail("lapsed", partner),)
    return Transition(action, old, new, changes, mails)


def _pending_due(confirmed_at: dt.datetime, expires_at: dt.datetime, reminders_sent: int,
                 wf: WorkflowConfig) -> dt.datetime:
    """The next reminder, or the expiry when no reminder is left."""
    if reminders_sent < len(wf.reminders):
        return min(confirmed_at + wf.reminders[reminders_sent], expires_at)
    return expires_at


@dataclass(frozen=True)
class Reminder:
    """A reminder owed to the customer; `reminders_sent` counts every offset passed, so
    after downtime one reminder stands for all the missed ones (never a burst)."""

    reminders_sent: int
    due_at: dt.datetime
    mail: Mail


def due(req: RequestLike, now: dt.datetime, wf: WorkflowConfig) -> Action | Reminder | None:
    """What a scheduled check owes this request at `now` (DESIGN §1, §4)."""
    state = State(req.state)
    if state is State.awaiting_confirmation and req.review_expires_at and now >= req.review_expires_at:
        return Action.lapse
    if state is not State.pending_acceptance or req.confirmed_at is None or req.expires_at is None:
        return None
    if now >= req.expires_at:
        return Action.expire
    passed = sum(1 for offset in wf.reminders if req.confirmed_at + offset <= now)
    if passed <= req.reminders_sent:
        return None
    days_left = max(0, (req.expires_at - now).days)
    return Reminder(
        reminders_sent=passed,
        due_at=_pending_due(req.confirmed_at, req.expires_at, passed, wf),
        mail=Mail("reminder", req.customer_email, CUSTOMER, CUSTOMER_ACTIVATION, extra={"days_left": days_left}),
    )


def parties(req: RequestLike) -> Sequence[str]:
    return (req.partner_email.lower(), req.customer_email.lower())


def delivery_failed(req: RequestLike, kind: str, recipient: str, error: str) -> Mail | None:
    """The one rule for a lost email (DESIGN §3): whether it bounced or the server refused it,
    an email to the customer that did not arrive is told to the partner, who can reach them."""
    if kind == "delivery_failed" or recipient.lower() != req.customer_email.lower():
        return None
    return Mail("delivery_failed", req.partner_email, extra={"failed_recipient": recipient, "error": error[:300]})


def next_due(req: RequestLike, wf: WorkflowConfig) -> dt.datetime | None:
    """When a scheduled check will next owe this request something; None when never."""
    state = State(req.state)
    if state is State.awaiting_confirmation:
        return req.review_expires_at
    if state is State.pending_acceptance and req.confirmed_at and req.expires_at:
        return _pending_due(req.confirmed_at, req.expires_at, req.reminders_sent, wf)
    return None
