"""The transition table, the security rule and the due-work rules, as pure functions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest

from daemon.config import WorkflowConfig
from daemon.core.workflow import Reminder, due, next_due, transition
from models.state import Action, State
from parsers.reply import Keyword

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)
WF = WorkflowConfig()
DAY = dt.timedelta(days=1)


@dataclass
class Req:
    state: str = State.awaiting_confirmation.value
    partner_email: str = "p@partner.example"
    customer_email: str = "c@acme.example"
    user_emails: list[str] = field(default_factory=lambda: ["u1@acme.example", "u2@acme.example"])
    created_at: dt.datetime = NOW
    review_expires_at: dt.datetime | None = NOW + 14 * DAY
    confirmed_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    reminders_sent: int = 0


@dataclass
class Tok:
    party: str = "partner"
    issued_for_state: str = State.awaiting_confirmation.value
    used_at: dt.datetime | None = None
    actions: tuple[str, ...] = ("CONFIRM", "CANCEL")

    def allows(self, keyword: str) -> bool:
        return keyword in self.actions


def pending(**kw: object) -> Req:
    base = dict(state=State.pending_acceptance.value, confirmed_at=NOW, expires_at=NOW + 90 * DAY)
    base.update(kw)
    return Req(**base)  # type: ignore[arg-type]


def test_confirm_sends_request_complete_and_activation_and_sets_the_expiry() -> None:
    t = transition(Req(), Action.confirm, NOW, WF)
    assert t is not None and t.new_state is State.pending_acceptance
    assert t.changes["expires_at"] == NOW + 90 * DAY
    assert t.changes["due_at"] == NOW + 7 * DAY  # the first reminder
    assert [(m.kind, m.to, m.party, m.actions) for m in t.mails] == [
        ("request_complete", "p@partner.example", "partner", ("CANCEL",)),
        ("activation", "c@acme.example", "customer", ("ACCEPT", "DECLINE")),
    ]


def test_accept_notifies_partner_customer_and_every_added_user() -> None:
    t = transition(pending(), Action.accept, NOW, WF)
    assert t is not None and t.new_state is State.active
    assert [(m.kind, m.to) for m in t.mails] == [
        ("activation_confirmation", "p@partner.example"), ("welcome", "c@acme.example"),
        ("user_notice", "u1@acme.example"), ("user_notice", "u2@acme.example")]
    assert t.changes["due_at"] is None


def test_cancel_tells_the_customer_only_once_an_activation_went_out() -> None:
    before = transition(Req(), Action.cancel, NOW, WF)
    after = transition(pending(), Action.cancel, NOW, WF)
    assert before is not None and after is not None
    assert [m.to for m in before.mails] == ["p@partner.example"]
    assert [m.to for m in after.mails] == ["p@partner.example", "c@acme.example"]


@pytest.mark.parametrize("state", [s for s in State if s not in (State.awaiting_confirmation,
                                                                 State.pending_acceptance)])
def test_closed_requests_do_not_move(state: State) -> None:
    for action in Action:
        assert transition(Req(state=state.value), action, NOW, WF) is None


def test_accept_does_not_apply_before_confirmation() -> None:
    assert transition(Req(), Action.accept, NOW, WF) is None


def test_due_work_lapse_reminders_expiry() -> None:
    assert due(Req(), NOW + 13 * DAY, WF) is None
    assert due(Req(), NOW + 14 * DAY, WF) is Action.lapse
    assert due(pending(), NOW + 6 * DAY, WF) is None
    r = due(pending(), NOW + 7 * DAY, WF)
    assert isinstance(r, Reminder) and r.reminders_sent == 1 and r.due_at == NOW + 30 * DAY
    assert r.mail.kind == "reminder" and r.mail.to == "c@acme.example"
    assert due(pending(reminders_sent=1), NOW + 8 * DAY, WF) is None
    assert due(pending(reminders_sent=4), NOW + 90 * DAY, WF) is Action.expire


def test_missed_reminders_collapse_into_one() -> None:
    r = due(pending(), NOW + 65 * DAY, WF)
    assert isinstance(r, Reminder) and r.reminders_sent == 3 and r.due_at == NOW + 83 * DAY


def test_expiry_wins_over_a_pending_reminder() -> None:
    assert due(pending(), NOW + 100 * DAY, WF) is Action.expire


def test_next_due_follows_the_state() -> None:
    assert next_due(Req(), WF) == NOW + 14 * DAY
    assert next_due(pending(reminders_sent=4), WF) == NOW + 90 * DAY
    assert next_due(Req(state="active"), WF) is None
