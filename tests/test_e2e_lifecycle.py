"""The whole process by email (DESIGN §1, §3) on the embedded default, through the CLI's entry point,
replies written as real clients write them; every forgery and replay refused with a WARNING."""

from __future__ import annotations

import re

import datetime as dt
import email.utils
from email.message import EmailMessage

import pytest

from e2e import Install, Sent, good_fields, reply, request_email

PARTNER = "paula@partner.example"
CUSTOMER = "carla@acme.example"


def submit(install: Install, lang: str = "en", **fields: str) -> Sent:
    install.drop(request_email(good_fields(**fields), lang=lang))
    install.run_once()
    [review] = install.new_sent()
    return review


def by_recipient(sent: list[Sent]) -> dict[str, list[Sent]]:
    out: dict[str, list[Sent]] = {}
    for s in sent:
        out.setdefault(s.to, []).append(s)
    return out


def state(install: Install) -> str:
    return install.requests()[0]["state"]


@pytest.mark.parametrize("style", ["gmail", "outlook", "bottom", "html"])
def test_the_whole_story_in_english(install: Install, style: str) -> None:
    review = submit(install)
    kw = {"style": "gmail", "html": True} if style == "html" else {"style": style}
    install.drop(reply(review, "CONFIRM", **kw))  # type: ignore[arg-type]
    install.run_once()
    sent = by_recipient(install.new_sent())
    [complete] = sent[PARTNER]
    [activation] = sent[CUSTOMER]
    assert "[SA-000001]" in complete.subject and "[SA-000001]" in activation.subject
    assert state(install) == "pending_acceptance"
    expires = install.requests()[0]["expires_at"]
    for text in ("Acme Robotics", "acme.example", PARTNER, "Please accept soon.", "ACCEPT", "DECLINE"):
        assert text in activation.text
    assert _long_date(expires) in activation.text  # the exact expiry date

    install.drop(reply(activation, "ACCEPT.", **kw))  # type: ignore[arg-type]
    install.run_once()
    sent = by_recipient(install.new_sent())
    assert set(sent) == {PARTNER, CUSTOMER, "dev1@acme.example", "dev2@acme.example"}
    assert "Licences are under Inventory." in sent["dev1@acme.example"][0].text
    assert state(install) == "active"
    log = install.log()
    for name in ("request.created", "request.confirmed", "request.accepted"):
        assert f"INFO {name} ref=SA-000001" in log
    assert "WARNING" not in log


@pytest.mark.both_databases
def test_the_whole_story_in_german(install: Install) -> None:
    review = submit(install, lang="de")
    assert "BESTÄTIGEN" in review.text
    install.drop(reply(review, "Bestätigen", style="outlook", lang="de"))
    install.run_once()
    sent = by_recipient(install.new_sent())
    [activation] = sent[CUSTOMER]
    assert "AKZEPTIEREN" in activation.text and "ABLEHNEN" in activation.text
    install.drop(reply(activation, "AKZEPTIEREN", style="gmail", lang="de"))
    install.run_once()
    assert state(install) == "active"
    welcome = by_recipient(install.new_sent())[CUSTOMER][0]
    assert welcome.msg["Content-Language"] == "de"


@pytest.mark.both_databases
def test_decline_tells_the_partner(install: Install) -> None:
    review = submit(install)
    install.drop(reply(review, "CONFIRM"))
    install.run_once()
    activation = by_recipient(install.new_sent())[CUSTOMER][0]
    install.drop(reply(activation, "decline"))
    install.run_once()
    told, receipt = sorted(install.new_sent(), key=lambda s: s.to != PARTNER)
    assert told.to == PARTNER and "[SA-000001]" in told.subject
    assert receipt.to == CUSTOMER and "You declined" in receipt.subject and PARTNER in receipt.text
    assert "Code:" not in receipt.text and "you do not need to answer" in receipt.text   # it asks for no word
    assert state(install) == "declined"


def test_cancel_before_confirmation_tells_only_the_partner(install: Install) -> None:
    review = submit(install)
    install.drop(reply(review, "CANCEL"))
    install.run_once()
    assert [s.to for s in install.new_sent()] == [PARTNER]
    assert state(install) == "cancelled"


@pytest.mark.both_databases
def test_cancel_after_confirmation_tells_the_customer(install: Install) -> None:
    review = submit(install)
    install.drop(reply(review, "CONFIRM"))
    install.run_once()
    complete = by_recipient(install.new_sent())[PARTNER][0]
    install.drop(reply(complete, "Stornieren!", lang="de"))
    install.run_once()
    assert sorted(s.to for s in install.new_sent()) == sorted([PARTNER, CUSTOMER])
    assert state(install) == "cancelled"


@pytest.mark.both_databases
def test_a_second_request_is_welcome_after_cancellation(install: Install) -> None:
    review = submit(install)
    install.drop(reply(review, "CANCEL"))
    install.run_once()
    install.new_sent()
    again = submit(install)
    assert "[SA-000002]" in again.subject
    assert [r["state"] for r in install.requests()] == ["awaiting_confirmation", "cancelled"]


def test_status_answers_a_party_only(install: Install) -> None:
    submit(install)
    for sender in (PARTNER, "mallory@partner.example"):
        msg = request_email({}, sender=sender)
        msg.set_content("STATUS SA-000001\n")
        install.drop(msg)
    install.run_once()
    [status] = install.new_sent()
    assert status.to == PARTNER
    assert "SA-000001" in status.subject
    assert "WARNING status.refused ref=SA-000001 sender=mallory@partner.example" in install.log()


# --- the security rule (DESIGN §3) -----------------------------------------------------------------

def _assert_refused(install: Install, reason: str, expected_state: str) -> None:
    assert install.new_sent() == []
    assert state(install) == expected_state
    assert re.search(rf"WARNING reply\.refused (ref=SA-\d+ )?reason={reason}", install.log())


def test_the_reference_without_the_token_does_nothing(install: Install) -> None:
    review = submit(install)
    forged = EmailMessage()
    forged["From"] = PARTNER
    forged["To"] = "smart-accounts@example.com"
    forged["Subject"] = "Re: " + review.subject
    forged["Message-ID"] = email.utils.make_msgid()
    forged.set_content("CONFIRM\n")
    install.drop(forged)
    install.run_once()
    # Nothing changes; the partner address on the request (not the From address) is told how to answer.
    [told] = install.new_sent()
    assert state(install) == "awaiting_confirmation"
    assert told.to == PARTNER and "How to answer" in told.subject and "new email rather than as a reply" in told.text
    assert "INFO reply.answered ref=SA-000001 reason=no_code party=partner keyword=CONFIRM" in install.log()


def test_the_right_token_from_another_address_does_nothing(install: Install) -> None:
    review = submit(install)
    install.drop(reply(review, "CONFIRM", sender="mallory@partner.example"))
    install.run_once()
    _assert_refused(install, "wrong_sender", "awaiting_confirmation")


def test_the_partner_cannot_accept_for_the_customer(install: Install) -> None:
    review = submit(install)
    install.drop(reply(review, "CONFIRM"))
    install.run_once()
    complete = by_recipient(install.new_sent())[PARTNER][0]
    install.drop(reply(complete, "ACCEPT"))
    install.run_once()
    # Nothing changes and the customer hears nothing; the partner learns whose word ACCEPT is.
    [told] = install.new_sent()
    assert state(install) == "pending_acceptance" and told.to == PARTNER
    assert "ACCEPT is an answer for the customer" in told.text and "You can answer with CANCEL" in told.text


@pytest.mark.both_databases
def test_a_replayed_confirm_gets_a_friendly_answer_and_no_second_activation(install: Install) -> None:
    review = submit(install)
    first = reply(review, "CONFIRM")
    install.drop(first)
    install.run_once()
    assert len(install.new_sent()) == 2
    second = reply(review, "CONFIRM")  # a new message quoting the same review: same token
    install.drop(second)
    install.run_once()
    [answer] = install.new_sent()
    assert answer.to == PARTNER
    assert "WARNING reply.refused ref=SA-000001 reason=stale" in install.log()
    assert state(install) == "pending_acceptance"


def test_a_token_of_another_request_does_nothing(install: Install) -> None:
    first = submit(install)
    second = submit(install, domain="beta.example", customer_email="bob@beta.example")
    # Request 1's token, with request 2's reference in the subject.
    msg = reply(first, "CONFIRM")
    msg.replace_header("Subject", "Re: " + second.subject)
    install.drop(msg)
    install.run_once()
    assert install.new_sent() == []
    assert [r["state"] for r in install.requests()] == ["awaiting_confirmation", "awaiting_confirmation"]
    assert re.search(r"WARNING reply\.refused ref=SA-\d+ reason=ref_mismatch", install.log())


@pytest.mark.both_databases
def test_a_reply_too_late_gets_told_it_expired(install: Install) -> None:
    review = submit(install)
    install.drop(reply(review, "CONFIRM"))
    install.run_once()
    activation = by_recipient(install.new_sent())[CUSTOMER][0]
    install.offset = "91d"
    install.cli("check")
    told = by_recipient(install.new_sent())
    assert set(told) == {PARTNER, CUSTOMER}
    assert state(install) == "expired"
    install.drop(reply(activation, "ACCEPT"))
    install.run_once()
    [late] = install.new_sent()
    assert late.to == CUSTOMER
    assert "expired" in late.text
    assert state(install) == "expired"


# --- scheduled checks --------------------------------------------------------------------------------

@pytest.mark.both_databases
def test_reminders_go_once_each_and_expiry_after_the_window(install: Install) -> None:
    review = submit(install)
    install.drop(reply(review, "CONFIRM"))
    install.run_once()
    install.new_sent()
    for offset, expected in (("6d", 0), ("8d", 1), ("8d", 0), ("31d", 1), ("61d", 1), ("84d", 1), ("85d", 0)):
        install.offset = offset
        install.cli("check")
        sent = install.new_sent()
        assert [s.to for s in sent] == [CUSTOMER] * expected, offset
        assert state(install) == "pending_acceptance"
    install.offset = "91d"
    install.cli("check")
    assert sorted(s.to for s in install.new_sent()) == sorted([CUSTOMER, PARTNER])
    assert state(install) == "expired"
    assert install.log().count("INFO reminder.sent ref=SA-000001") == 4


@pytest.mark.both_databases
def test_after_downtime_missed_reminders_are_caught_up_once(install: Install) -> None:
    review = submit(install)
    install.drop(reply(review, "CONFIRM"))
    install.run_once()
    install.new_sent()
    install.offset = "65d"  # 7d, 30d and 60d all passed while we were down
    install.cli("check")
    assert [s.to for s in install.new_sent()] == [CUSTOMER]
    install.cli("check")
    assert install.new_sent() == []


@pytest.mark.both_databases
def test_an_unconfirmed_review_lapses(install: Install) -> None:
    review = submit(install)
    install.offset = "15d"
    install.run_once()
    [told] = install.new_sent()
    assert told.to == PARTNER
    assert state(install) == "lapsed"
    install.drop(reply(review, "CONFIRM"))
    install.run_once()
    [late] = install.new_sent()
    assert late.to == PARTNER
    assert state(install) == "lapsed"


def _long_date(iso: str) -> str:
    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return f"{when.day} {when.strftime('%B')} {when.year}"
