"""decide(): every rule of what a message, a check or an admin causes, with values only (DESIGN §1, §3).

No database, no clock but the `NOW` passed in: requests and tokens are plain frozen values,
messages are parsed from bytes, intents come from the real classifier.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

import pytest

from daemon.config import WorkflowConfig
from daemon.core.decide import BouncedFact, Decision, Facts, TokenFact, decide, decide_cancel, decide_due, \
    decide_refused
from models.message import Folder, Outcome
from parsers import classify as cl
from parsers.message import parse_message

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)
WF = WorkflowConfig(partner_domains=("partner.example",))
OURS = "smart-accounts@example.com"
PARTNER = "paula@partner.example"
CUSTOMER = "carla@acme.example"
TOKEN = "a" * 26


@dataclass(frozen=True)
class Req:
    id: int = 42
    state: str = "awaiting_confirmation"
    language: str = "en"
    partner_email: str = PARTNER
    customer_email: str = CUSTOMER
    user_emails: list[str] = field(default_factory=lambda: ["dev@acme.example"])
    created_at: dt.datetime = NOW - dt.timedelta(days=1)
    review_expires_at: dt.datetime | None = NOW + dt.timedelta(days=13)
    confirmed_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    reminders_sent: int = 0


@dataclass(frozen=True)
class Tok:
    id: int = 7
    party: str = "partner"
    actions: str = "CONFIRM CANCEL"
    issued_for_state: str = "awaiting_confirmation"
    used_at: dt.datetime | None = None

    def allows(self, keyword: str) -> bool:
        return keyword in self.actions.split()


PENDING = Req(state="pending_acceptance", confirmed_at=NOW - dt.timedelta(days=1),
              expires_at=NOW + dt.timedelta(days=89), review_expires_at=None)
CUSTOMER_TOKEN = Tok(party="customer", actions="ACCEPT DECLINE", issued_for_state="pending_acceptance")


def mail(sender: str, body: str, *, subject: str = "Hello", to: str = OURS, extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <m1@x.example>\r\n{extra}\r\n"
            f"{body}\r\n").encode()


def run(raw: bytes, wf: WorkflowConfig = WF, **facts: object) -> Decision:
    msg = parse_message(raw)
    intent = cl.classify(msg, partner_domains=wf.partner_domains, own_address=OURS,
                         dmarc_authserv_id=wf.trusted_authserv_id if wf.require_dmarc_pass else None)
    return decide(intent, Facts(msg, **facts), NOW, wf)  # type: ignore[arg-type]


def kinds(decision: Decision) -> list[tuple[str, str]]:
    return [(m.kind, m.to) for m in decision.mails]


def logged(decision: Decision) -> list[str]:
    return [line.name for line in decision.logs]


FORM = ("Account Name: Acme Robotics\nCustomer Email: carla@acme.example\nAccount Domain: acme.example\n"
        "User Emails: dev@acme.example\n")
REPLY_TO_US = f"smart-accounts+{TOKEN}@example.com"


# --- new requests ------------------------------------------------------------------------------------

def test_a_valid_form_creates_a_request_and_a_review() -> None:
    d = run(mail(PARTNER, FORM))
    assert (d.outcome, d.folder) == (Outcome.request, Folder.processed)
    assert d.create is not None and d.create["state"] == "awaiting_confirmation"
    assert d.create["account_domain"] == "acme.example" and d.create["review_expires_at"] == NOW + WF.review_window
    assert kinds(d) == [("review", PARTNER)] and d.mails[0].party == "partner"
    assert logged(d) == ["request.created"]


def test_an_invalid_form_is_rejected_with_every_problem() -> None:
    d = run(mail(PARTNER, "Account Name: A\nCustomer Email: nope\n"))
    assert (d.outcome, d.folder) == (Outcome.rejected, Folder.rejected)
    assert d.create is not None and d.create["state"] == "rejected"
    [rejection] = d.mails
    assert rejection.kind == "rejection" and rejection.to == PARTNER and rejection.with_form
    codes = {(p.field, p.code) for p in rejection.extra["problems"]}
    assert ("account_name", "too_short") in codes and ("customer_email", "invalid_email") in codes
    assert ("account_domain", "missing") in codes


def test_a_domain_with_an_open_request_is_rejected_with_its_reference() -> None:
    d = run(mail(PARTNER, FORM), open_ref="SA-000007")
    [rejection] = d.mails
    assert [(p.code, dict(p.params)) for p in rejection.extra["problems"]] == [("domain_taken", {"ref": "SA-000007"})]


def test_mail_that_is_no_request_gets_the_blank_form() -> None:
    d = run(mail(PARTNER, "Hi, how does this work?"))
    assert kinds(d) == [("rejection", PARTNER)] and logged(d) == ["message.not_a_request"]


def test_an_outsider_is_never_answered() -> None:
    d = run(mail("someone@elsewhere.example", FORM))
    assert d.mails == () and d.create is None and logged(d) == ["message.ignored"]


def test_a_message_over_the_size_limit() -> None:
    assert kinds(run(mail(PARTNER, ""), truncated_size=30_000_000, max_message_size=25_000_000)) == \
        [("rejection", PARTNER)]
    assert run(mail("x@elsewhere.example", ""), truncated_size=30_000_000, max_message_size=25_000_000).mails == ()


# --- replies -----------------------------------------------------------------------------------------

def reply(keyword: str, sender: str = PARTNER, subject: str = "Re: [SA-000042] Please review") -> bytes:
    return mail(sender, f"{keyword}\n\n> quoted", subject=subject, to=REPLY_TO_US)


def test_confirm_with_a_live_token_moves_the_request_and_uses_the_token() -> None:
    req, tok = Req(), Tok()
    d = run(reply("CONFIRM"), tokens=[TokenFact(tok, req)])
    assert (d.outcome, d.folder) == (Outcome.reply, Folder.processed)
    assert d.update is not None and d.update.expect == {"state": "awaiting_confirmation"}
    assert d.update.changes["state"] == "pending_acceptance"
    assert d.update.changes["expires_at"] == NOW + WF.acceptance_window
    assert d.token is tok
    assert kinds(d) == [("request_complete", PARTNER), ("activation", CUSTOMER)]
    assert d.events[0][0] == "request.confirmed" and logged(d) == ["request.confirmed"]


def test_accept_from_the_customer_notifies_everyone() -> None:
    d = run(reply("ACCEPT", CUSTOMER), tokens=[TokenFact(CUSTOMER_TOKEN, PENDING)])
    assert d.update is not None and d.update.changes["state"] == "active"
    assert kinds(d) == [("activation_confirmation", PARTNER), ("welcome", CUSTOMER), ("user_notice", "dev@acme.example")]


@pytest.mark.parametrize("case", ["no_token", "wrong_sender", "ref_mismatch"])
def test_a_reply_that_may_not_act_changes_nothing(case: str) -> None:
    req, tok, raw = Req(), Tok(), reply("CONFIRM")
    tokens = [TokenFact(tok, req)]
    if case == "no_token":
        tokens = []
    elif case == "wrong_sender":
        raw = reply("CONFIRM", "mallory@partner.example")
    else:
        raw = reply("CONFIRM", subject="Re: [SA-000099] Please review")
    d = run(raw, tokens=tokens)
    assert d.update is None and d.token is None and d.mails == () and d.folder is Folder.rejected
    [line] = d.logs
    assert line.name == "reply.refused" and line.fields["reason"] == case


def test_the_other_partys_word_gets_an_answer_with_the_words_allowed_now() -> None:
    d = run(reply("ACCEPT"), tokens=[TokenFact(Tok(), Req())])     # the partner writes the customer's word
    assert d.update is None and d.token is None and d.outcome is Outcome.answered
    [answer] = d.mails
    assert (answer.kind, answer.to, answer.party, answer.actions) == ("answer", PARTNER, "partner", ("CONFIRM", "CANCEL"))
    assert answer.extra["reason"] == "not_yours" and answer.extra["keyword"] == "ACCEPT"


def test_a_vague_reply_from_the_customer_is_answered_never_with_the_partners_form() -> None:
    d = run(reply("Yes please", CUSTOMER), tokens=[TokenFact(CUSTOMER_TOKEN, PENDING)])
    [answer] = d.mails
    assert answer.kind == "answer" and not answer.with_form and answer.actions == ("ACCEPT", "DECLINE")
    assert answer.extra["reason"] == "unclear" and answer.extra["line"] == "Yes please"


def test_a_partners_keyword_with_a_reference_but_no_code_is_answered_at_the_stored_address() -> None:
    d = run(mail("someone@partner.example", "CONFIRM SA-000042"), request=Req())
    [answer] = d.mails
    assert answer.to == PARTNER and answer.extra["reason"] == "no_code" and d.update is None
    assert not answer.thread


def test_a_stale_reply_gets_a_friendly_answer() -> None:
    d = run(reply("CONFIRM"), tokens=[TokenFact(dataclasses.replace(Tok(), used_at=NOW), Req())])
    assert d.update is None and kinds(d) == [("late_reply", PARTNER)] and d.outcome is Outcome.answered
    assert d.logs[0].fields["reason"] == "stale"


def test_dmarc_is_required_when_configured_for_replies_and_new_requests() -> None:
    wf = dataclasses.replace(WF, require_dmarc_pass=True, trusted_authserv_id="mx.example.com")
    for raw in (reply("CONFIRM"), mail(PARTNER, FORM)):
        d = run(raw, wf, tokens=[TokenFact(Tok(), Req())])
        assert d.update is None and d.create is None and d.mails == () and d.folder is Folder.rejected
        assert [(line.name, line.fields["reason"]) for line in d.logs] == [("message.refused", "dmarc")]
    passed = "Authentication-Results: mx.example.com; dmarc=pass header.from=partner.example\r\n"
    assert run(mail(PARTNER, FORM, extra=passed), wf).create is not None


def test_two_from_addresses_are_refused_and_never_answered() -> None:
    d = run(reply("CONFIRM", f"{PARTNER}, mallory@evil.example"), tokens=[TokenFact(Tok(), Req())])
    assert d.update is None and d.mails == () and d.logs[0].fields["reason"] == "from_not_one_address"


def test_status_and_help() -> None:
    status = run(mail(PARTNER, "STATUS SA-000042"), request=Req())
    assert kinds(status) == [("status", PARTNER)] and status.request == Req()
    refused = run(mail("mallory@partner.example", "STATUS SA-000042"), request=Req())
    assert refused.mails == () and refused.logs[0].fields["reason"] == "not_a_party"
    help_ = run(mail(PARTNER, "HELP"))
    assert kinds(help_) == [("help", PARTNER)] and help_.mails[0].with_form


# --- bounces -----------------------------------------------------------------------------------------

def bounce(status: str) -> bytes:
    return mail("MAILER-DAEMON@mx.example", f"Status: {status}\n", subject="Undelivered Mail Returned to Sender",
                extra="X-Failed-Recipients: carla@acme.example\r\n")


def test_a_bounce_of_an_email_to_the_customer_tells_the_partner() -> None:
    d = run(bounce("5.1.1"), bounced=BouncedFact("activation", CUSTOMER, PENDING))
    assert kinds(d) == [("delivery_failed", PARTNER)] and d.events[0][0] == "email.bounced"
    assert run(bounce("4.4.1"), bounced=BouncedFact("activation", CUSTOMER, PENDING)).mails == ()   # a delay
    assert logged(run(bounce("5.1.1"))) == ["bounce.ignored"]


# --- checks, admins, refused emails ---------------------------------------------------------------------

def test_due_work() -> None:
    lapsed = decide_due(Req(review_expires_at=NOW - dt.timedelta(seconds=1)), NOW, WF)
    assert lapsed.update is not None and lapsed.update.changes["state"] == "lapsed"
    assert kinds(lapsed) == [("lapsed", PARTNER)]
    reminder = decide_due(dataclasses.replace(PENDING, confirmed_at=NOW - dt.timedelta(days=8)), NOW, WF)
    assert kinds(reminder) == [("reminder", CUSTOMER)]
    assert reminder.update is not None and reminder.update.expect == {"reminders_sent": 0, "state": "pending_acceptance"}
    expired = decide_due(dataclasses.replace(PENDING, expires_at=NOW), NOW, WF)
    assert kinds(expired) == [("expired_customer", CUSTOMER), ("expired_partner", PARTNER)]
    nothing = decide_due(PENDING, NOW, WF)
    assert nothing.mails == () and nothing.update is not None and set(nothing.update.changes) == {"due_at"}


def test_an_admin_cancels_only_open_requests() -> None:
    d = decide_cancel(PENDING, "asked by phone", NOW, WF)
    assert d is not None and kinds(d) == [("cancelled_partner", PARTNER), ("cancelled_customer", CUSTOMER)]
    assert d.events[0][1] == {"by": "admin", "reason": "asked by phone"}
    assert decide_cancel(Req(state="active"), "", NOW, WF) is None


def test_one_rule_for_a_lost_email_to_the_customer() -> None:
    assert kinds(decide_refused(PENDING, "reminder", CUSTOMER, "550 no such user")) == [("delivery_failed", PARTNER)]
    assert decide_refused(PENDING, "review", PARTNER, "550 no such user").mails == ()
