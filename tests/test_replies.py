"""Replies people actually write (issue 14; DESIGN §3): decisions in their own words, an answer that
fits every party, one-click links, a receipt for every decision.

Every case goes through the daemon, in English and German, with replies written as Outlook,
Gmail, Apple Mail and Thunderbird write them; what is asserted is what each person received.
"""

from __future__ import annotations

import email.utils
from email.message import EmailMessage

import pytest

from clients import CLIENTS, client_reply, links, one_click
from e2e import Install, Sent, good_fields, request_email

PARTNER = "paula@partner.example"
CUSTOMER = "carla@acme.example"
USERS = ("dev1@acme.example", "dev2@acme.example")
WORDS = {"en": {"CONFIRM": "CONFIRM", "ACCEPT": "ACCEPT", "DECLINE": "DECLINE", "CANCEL": "CANCEL"},
         "de": {"CONFIRM": "BESTÄTIGEN", "ACCEPT": "AKZEPTIEREN", "DECLINE": "ABLEHNEN", "CANCEL": "STORNIEREN"}}


def state(install: Install) -> str:
    return str(install.requests()[0]["state"])


def submit(install: Install, lang: str) -> Sent:
    install.drop(request_email(good_fields(language=lang), lang=lang))
    install.run_once()
    [review] = install.new_sent()
    return review


def confirmed(install: Install, lang: str) -> Sent:
    """Submitted and confirmed; returns the customer's activation email."""
    review = submit(install, lang)
    install.drop(one_click(links(review)[WORDS[lang]["CONFIRM"]], PARTNER))
    install.run_once()
    [activation] = [s for s in install.new_sent() if s.to == CUSTOMER]
    return activation


def answer(install: Install, msg: EmailMessage) -> list[Sent]:
    install.drop(msg)
    install.run_once()
    return install.new_sent()


# --- decisions in people's own words, from every client --------------------------------------------------

@pytest.mark.parametrize("lang, said_confirm, said_accept", [
    ("en", "I confirm", "Yes, I accept"), ("de", "Bestätigt", "Ich akzeptiere")])
@pytest.mark.parametrize("client, html_part, bottom", [
    (client, html_part, bottom) for client in CLIENTS for html_part, bottom in ((False, False), (True, False),
                                                                               (False, True))
    if not (client == "outlook" and bottom)])          # Outlook does not bottom-post
def test_the_story_in_their_own_words(install: Install, client: str, html_part: bool, bottom: bool, lang: str,
                                      said_confirm: str, said_accept: str) -> None:
    review = submit(install, lang)
    sent = answer(install, client_reply(review, said_confirm, client=client, html_part=html_part, bottom=bottom,
                                        lang=lang))
    assert state(install) == "pending_acceptance", [s.subject for s in sent]
    [activation] = [s for s in sent if s.to == CUSTOMER]
    sent = answer(install, client_reply(activation, said_accept, client=client, html_part=html_part,
                                        bottom=bottom, lang=lang))
    assert state(install) == "active"
    assert sorted(s.to for s in sent) == sorted([PARTNER, CUSTOMER, *USERS])


# --- an answer that fits -----------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", ["en", "de"])
@pytest.mark.parametrize("typed", ["ok", "Yes", "ja", "Yes please, go ahead", "I do not accept", "ACCEPT?",
                                   "accept after the review"])
def test_a_customer_who_writes_no_decision_gets_their_words_and_nothing_changes(install: Install, lang: str,
                                                                                typed: str) -> None:
    activation = confirmed(install, lang)
    [told] = answer(install, client_reply(activation, typed, client="gmail", lang=lang))
    assert state(install) == "pending_acceptance" and told.to == CUSTOMER
    accept, decline = WORDS[lang]["ACCEPT"], WORDS[lang]["DECLINE"]
    assert set(links(told)) == {accept, decline}                    # never CONFIRM, never the partner's form
    assert f"{accept} or {decline}" in told.text or f"{accept} oder {decline}" in told.text
    assert "Account Name:" not in told.text and "Kontoname:" not in told.text


@pytest.mark.parametrize("lang, typed, expected", [
    ("de", "BESTÄTIGEN", "AKZEPTIEREN"), ("en", "CONFIRM", "ACCEPT"), ("en", "Confirmed.", "ACCEPT")])
def test_the_other_partys_word_is_answered_with_the_customers_words(install: Install, lang: str, typed: str,
                                                                   expected: str) -> None:
    activation = confirmed(install, lang)
    [told] = answer(install, client_reply(activation, typed, client="outlook", lang=lang))
    assert state(install) == "pending_acceptance" and told.to == CUSTOMER
    assert expected in told.text and "CONFIRM" not in links(told) and "BESTÄTIGEN" not in links(told)
    # The answer's own link works: the customer accepts from it.
    sent = answer(install, one_click(links(told)[expected], CUSTOMER))
    assert state(install) == "active" and CUSTOMER in [s.to for s in sent]


def test_help_from_the_customer_explains_their_words_not_how_to_submit(install: Install) -> None:
    activation = confirmed(install, "en")
    [told] = answer(install, client_reply(activation, "HELP", client="apple"))
    assert told.to == CUSTOMER and "You asked for help" in told.text and "Account Name:" not in told.text


@pytest.mark.parametrize("lang", ["en", "de"])
def test_a_partners_keyword_in_a_fresh_email_is_answered_at_the_partner_address_on_the_request(
        install: Install, lang: str) -> None:
    submit(install, lang)
    for sender in (PARTNER, "someone-else@partner.example"):
        fresh = request_email({}, sender=sender, lang=lang, subject="Confirmation")
        fresh.set_content(f"{WORDS[lang]['CONFIRM']} SA-000001\n\nRegards\n")
        told = answer(install, fresh)
        assert state(install) == "awaiting_confirmation"
        assert [s.to for s in told] in ([PARTNER], [])          # once a day per topic: the second is held back
    [first] = [s for s in install.sent() if "SA-000001" in s.subject][1:]
    assert WORDS[lang]["CONFIRM"] in links(first)
    install.drop(one_click(links(first)[WORDS[lang]["CONFIRM"]], PARTNER))
    install.run_once()
    assert state(install) == "pending_acceptance"


@pytest.mark.parametrize("lang", ["en", "de"])
def test_the_customer_who_declines_gets_a_receipt(install: Install, lang: str) -> None:
    activation = confirmed(install, lang)
    sent = answer(install, client_reply(activation, {"en": "I decline", "de": "Abgelehnt"}[lang],
                                        client="thunderbird", lang=lang))
    assert state(install) == "declined"
    receipt = next(s for s in sent if s.to == CUSTOMER)
    assert PARTNER in receipt.text and not links(receipt) and "Code:" not in receipt.text


def test_only_emails_that_ask_for_a_word_ask_for_one(install: Install) -> None:
    activation = confirmed(install, "en")
    sent = answer(install, one_click(links(activation)["ACCEPT"], CUSTOMER))
    review = install.sent()[0]
    assert "answer with one of the words above" in review.text and "answer with one of the words above" in \
        activation.text
    for notice in sent:   # confirmation, welcome, user notices
        assert "answer with one of the words above" not in notice.text and not links(notice), notice.kind \
            if hasattr(notice, "kind") else notice.subject


# --- one-click answers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", ["en", "de"])
@pytest.mark.parametrize("plus_delivered", [True, False])
def test_every_link_works_as_a_mail_client_follows_it(install: Install, lang: str, plus_delivered: bool) -> None:
    """Parse the mailto URL, compose, send: the keyword acts. When the server cannot deliver
    plus-addresses the email arrives for the bare address, and the Code line in its body carries it."""
    def follow(sent: Sent, word: str, sender: str) -> None:
        msg = one_click(links(sent)[word], sender)
        assert msg["Subject"] == f"{word} [SA-000001]" and str(msg.get_content()).startswith(word)
        if not plus_delivered:
            msg.replace_header("To", "smart-accounts@example.com")
        install.drop(msg)
        install.run_once()

    review = submit(install, lang)
    assert set(links(review)) == {WORDS[lang]["CONFIRM"], WORDS[lang]["CANCEL"]}
    follow(review, WORDS[lang]["CONFIRM"], PARTNER)
    assert state(install) == "pending_acceptance"
    [activation] = [s for s in install.new_sent() if s.to == CUSTOMER]
    assert set(links(activation)) == {WORDS[lang]["ACCEPT"], WORDS[lang]["DECLINE"]}
    assert all(link.startswith("mailto:smart-accounts+") and "http" not in link for link in links(activation).values())
    follow(activation, WORDS[lang]["ACCEPT"], CUSTOMER)
    assert state(install) == "active"


# --- nobody else is ever answered beyond what DESIGN §3 allows ------------------------------------------

def test_no_reply_from_someone_who_is_not_a_party_is_answered(install: Install) -> None:
    activation = confirmed(install, "en")
    outsiders = ["mallory@partner.example", "eve@elsewhere.example", "dev1@acme.example"]
    for sender in outsiders:
        for typed in ("ACCEPT", "CONFIRM", "ok", "HELP", "STATUS", "DECLINE SA-000001", "ACCEPT SA-000001"):
            install.drop(client_reply(activation, typed, client="gmail", sender=sender))      # with the code
            fresh = EmailMessage()
            fresh["From"], fresh["To"], fresh["Subject"] = sender, "smart-accounts@example.com", "[SA-000001]"
            fresh["Message-ID"] = email.utils.make_msgid(domain="x.example")
            fresh.set_content(f"{typed}\n")
            install.drop(fresh)                                                                  # without it
    install.run_once()
    sent = install.new_sent()
    assert state(install) == "pending_acceptance"
    # What §3 allows: HELP gets the blank form when its sender may submit (a partner domain), and a
    # partner's keyword with a reference is told to the partner address on the request.
    to_outsiders = [(s.to, s.subject) for s in sent if s.to in outsiders]
    assert to_outsiders == [("mallory@partner.example", "How to request a Smart Account")], to_outsiders
    assert {s.to for s in sent} <= {PARTNER, "mallory@partner.example"}
