"""Intake end to end on the embedded default: .eml in the inbox Maildir -> `smartacct run --once` ->
records, review or rejection emails in the outgoing Maildir, the message filed, the log."""

from __future__ import annotations

import email.utils
from email.message import EmailMessage
from pathlib import Path

import pytest

from e2e import Install, good_fields, request_email

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_english_example_becomes_a_request_and_a_review(install: Install) -> None:
    name = install.drop((EXAMPLES / "request-en.eml").read_bytes())
    install.run_once()

    [review] = install.new_sent()
    assert review.to == "paula@partner.example"
    assert "[SA-000001]" in review.subject
    assert review.msg["In-Reply-To"] == "<example-request-en-1@partner.example>"
    assert review.msg["Auto-Submitted"] == "auto-replied"
    for value in ("Acme Robotics", "carla.customer@acme-robotics.example", "acme-robotics.example",
                  "dev1@acme-robotics.example", "dev2@acme-robotics.example", "CONFIRM", "CANCEL"):
        assert value in review.text
    assert "Paula Partner ·" not in review.text  # the signature was not swallowed into a field
    assert review.token is not None

    [req] = install.requests()
    assert req["ref"] == "SA-000001"
    assert req["state"] == "awaiting_confirmation"
    assert req["account_name"] == "Acme Robotics"
    assert req["account_domain"] == "acme-robotics.example"
    assert req["customer_email"] == "carla.customer@acme-robotics.example"
    assert req["partner_email"] == "paula@partner.example"
    assert req["language"] == "en"
    assert req["user_emails"] == ["dev1@acme-robotics.example", "dev2@acme-robotics.example"]
    assert req["note_to_customer"].startswith("Please accept so that we can place your licence order")
    assert "before the end of the quarter." in req["note_to_customer"]
    assert install.folder_of(name) == "Processed"
    log = install.log()
    assert "INFO request.created ref=SA-000001 partner=paula@partner.example" in log
    assert "message.filed" in log and "folder=processed" in log
    assert review.token not in log


def test_german_example_gets_a_german_review(install: Install) -> None:
    install.drop((EXAMPLES / "request-de.eml").read_bytes())
    install.run_once()
    [review] = install.new_sent()
    assert review.to == "juergen@partner.example"
    assert "BESTÄTIGEN" in review.text and "STORNIEREN" in review.text
    assert "Müller Maschinenbau GmbH" in review.text
    [req] = install.requests()
    assert req["language"] == "de"
    assert req["account_name"] == "Müller Maschinenbau GmbH"
    assert req["user_emails"] == ["technik@mueller-maschinenbau.example", "it@mueller-maschinenbau.example"]


def test_invalid_form_is_rejected_with_every_problem(install: Install) -> None:
    bad = request_email({"account_name": "A", "customer_email": "not-an-address", "account_domain": "exa mple",
                         "user_emails": "ok@acme.example, broken@", "language": "fr"})
    name = install.drop(bad)
    install.run_once()
    [rejection] = install.new_sent()
    assert rejection.to == "paula@partner.example"
    assert "[SA-000001]" in rejection.subject
    lines = rejection.text.splitlines()
    for label in ("Account Name:", "Customer Email:", "Account Domain:", "User Emails:", "Language:"):
        assert any(line.strip().startswith(label) and len(line.strip()) > len(label) + 3 for line in lines), label
    assert "not-an-address" in rejection.text  # the partner's values are echoed
    assert "Note to Added Users:" in rejection.text  # the blank form to fill in again
    [req] = install.requests()
    assert req["state"] == "rejected"
    assert install.folder_of(name) == "Rejected"
    assert "request.rejected ref=SA-000001" in install.log()


@pytest.mark.both_databases
def test_the_same_message_twice_sends_one_review(install: Install) -> None:
    msg = request_email(good_fields(), message_id="<twice@partner.example>")
    first = install.drop(msg)
    install.run_once()
    second = install.drop(msg)
    install.run_once()
    assert len(install.sent()) == 1
    assert len(install.requests()) == 1
    assert install.folder_of(first) == "Processed" and install.folder_of(second) == "Processed"
    assert "message.duplicate" in install.log()


@pytest.mark.both_databases
def test_without_message_id_the_content_hash_makes_it_idempotent(install: Install) -> None:
    msg = request_email(good_fields())
    del msg["Message-ID"]
    install.drop(msg)
    install.drop(msg)
    install.run_once()
    assert len(install.sent()) == 1
    assert len(install.requests()) == 1


@pytest.mark.both_databases
def test_second_request_for_an_open_domain_is_rejected_with_the_existing_ref(install: Install) -> None:
    install.drop(request_email(good_fields()))
    install.run_once()
    install.drop(request_email(good_fields(account_name="Acme Again")))
    install.run_once()
    review, rejection = install.sent()
    assert "SA-000001" in rejection.text
    assert [r["state"] for r in install.requests()] == ["rejected", "awaiting_confirmation"]


def test_outsiders_and_auto_replies_are_filed_without_an_answer(install: Install) -> None:
    install.write_config('[workflow]\npartner_domains = ["partner.example"]\n')
    outsider = install.drop(request_email(good_fields(), sender="mallory@elsewhere.example"))
    auto = request_email(good_fields(domain="other.example"))
    auto["Auto-Submitted"] = "auto-replied"
    auto_name = install.drop(auto)
    install.run_once()
    assert install.sent() == []
    assert install.requests() == []
    assert install.folder_of(outsider) == "Processed" and install.folder_of(auto_name) == "Processed"
    log = install.log()
    assert "message.ignored reason=outsider" in log
    assert "reason=automatic" in log


def test_a_config_file_without_partner_domains_exits_2_naming_the_key(install: Install) -> None:
    install.config.write_text(install.config.read_text().replace('partner_domains = ["partner.example"]\n', ""))
    proc = install.cli("run", "--once", check=False)
    assert proc.returncode == 2 and "workflow.partner_domains" in proc.stderr and "[\"*\"]" in proc.stderr


def test_with_partner_domains_star_anyone_may_submit(install: Install) -> None:
    install.write_config('[workflow]\npartner_domains = ["*"]\n')
    install.drop(request_email(good_fields(), sender="someone@anywhere.example"))
    install.run_once()
    [req] = install.requests()
    assert req["partner_email"] == "someone@anywhere.example" and [s.to for s in install.sent()] == [req["partner_email"]]


def test_help_gets_the_blank_form(install: Install) -> None:
    msg = request_email({})
    msg.set_content("HELP\n")
    install.drop(msg)
    install.run_once()
    [answer] = install.sent()
    assert answer.to == "paula@partner.example"
    assert "Account Name:" in answer.text and "Customer Email:" in answer.text


def _plain(sender: str, body: bytes, headers: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: smart-accounts@example.com\r\nSubject: hi\r\n"
            f"Date: {email.utils.formatdate()}\r\n{headers}\r\n").encode() + body


def test_bad_input_gets_a_clear_outcome_and_the_messages_after_it_are_handled(install: Install) -> None:
    big = EmailMessage()
    big["From"] = "paula@partner.example"
    big["To"] = "smart-accounts@example.com"
    big["Subject"] = "big attachment"
    big["Message-ID"] = "<big@partner.example>"
    big.set_content("Account Name: Big Co\nCustomer Email: c@big.example\nAccount Domain: big.example\n")
    big.add_attachment(b"\0" * 10_000_000, maintype="application", subtype="octet-stream", filename="big.bin")
    names = {
        "not_a_request": install.drop(_plain("paula@partner.example", b"Hello, how are you?\r\n",
                                             "Message-ID: <nar@partner.example>\r\n")),
        "empty": install.drop(_plain("paula@partner.example", b"", "Message-ID: <empty@partner.example>\r\n")),
        "garbage": install.drop(b"\x00\xff\xfe this is not an email at all \x00\x01"),
        "charset": install.drop(_plain(
            "paula@partner.example",
            b"Account Name: Xylo\r\nCustomer Email: c@xylo.example\r\nAccount Domain: xylo.example\r\n",
            "Message-ID: <cs@partner.example>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=x-unknown-charset\r\n")),
        "big": install.drop(big),
        "after": install.drop(request_email(good_fields(domain="after.example"))),
    }
    install.run_once()
    folders = {k: install.folder_of(v) for k, v in names.items()}
    assert folders["not_a_request"] == "Rejected"
    assert folders["empty"] == "Rejected"
    assert folders["garbage"] in ("Processed", "Rejected")
    assert folders["charset"] == "Processed"
    assert folders["big"] == "Processed"
    assert folders["after"] == "Processed"
    to_paula = [s for s in install.sent() if s.to == "paula@partner.example"]
    # One "no form" rejection (the loop guard holds back the same answer the same day), three reviews.
    assert len(to_paula) == 4
    assert "WARNING email.suppressed kind=rejection to=paula@partner.example reason=same_answer_today" in install.log()
    assert {r["account_domain"] for r in install.requests()} == {"xylo.example", "big.example", "after.example"}
    assert "Traceback" not in install.log()


def test_process_command_handles_files_in_place(install: Install, tmp_path: Path) -> None:
    proc = install.cli("process", str(EXAMPLES / "request-en.eml"), str(EXAMPLES / "request-de.eml"))
    assert "processed" in proc.stdout
    assert len(install.sent()) == 2
    assert (EXAMPLES / "request-en.eml").exists()


def test_template_prints_the_blank_form(install: Install) -> None:
    assert "Account Name:" in install.cli("template").stdout
    de = install.cli("template", "--lang", "de").stdout
    assert "Kontodomäne:" in de and "Hinweis für hinzugefügte Benutzer:" in de


@pytest.mark.parametrize("extra, key", [
    ('[workflow]\nreview_window = "two weeks"\n', "workflow.review_window"),
    ('[workflow]\nmax_userz = 3\n', "workflow.max_userz"),
    ('[workflow]\ndefault_language = "fr"\n', "workflow.default_language"),
    ('[metrics]\nlisten = 9108\n', "metrics.listen"),
    ('[workflow]\nmax_users = "many"\n', "workflow.max_users"),
])
def test_a_bad_config_value_exits_2_naming_the_key(install: Install, extra: str, key: str) -> None:
    install.write_config(extra)
    proc = install.cli("requests", "list", check=False)
    assert proc.returncode == 2
    assert key in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.both_databases
def test_requests_show_has_the_timeline(install: Install) -> None:
    install.drop((EXAMPLES / "request-en.eml").read_bytes())
    install.run_once()
    shown = install.show("SA-000001")
    assert [e["name"] for e in shown["events"]][:2] == ["request.created", "email.queued"]
    assert shown["emails"][0]["kind"] == "review" and shown["emails"][0]["state"] == "sent"
    text = install.cli("requests", "show", "SA-000001").stdout
    assert "timeline:" in text and "request.created" in text


def test_a_message_over_the_size_limit_is_not_read_and_its_sender_is_told(install: Install) -> None:
    install.backends = install.backends.replace('path = "var/inbox"\n', 'path = "var/inbox"\nmax_message_size = "100KB"\n')
    install.write_config()
    big = request_email(good_fields(note_to_customer="x" * 200_000))
    name = install.drop(big)
    install.run_once()
    [told] = install.sent()
    assert told.to == "paula@partner.example"
    assert "larger than 100 KB" in told.text
    assert install.requests() == []
    assert install.folder_of(name) == "Rejected"
    assert "WARNING message.too_large sender=paula@partner.example" in install.log()


def test_a_form_in_an_attached_txt_file_is_read(install: Install) -> None:
    msg = request_email({})
    msg.set_content("Hello, please see the attached form.\n\nPaula\n")
    form = "".join(f"{label}: {value}\n" for label, value in (
        ("Account Name", "Attached Co"), ("Customer Email", "c@attached.example"),
        ("Account Domain", "attached.example")))
    msg.add_attachment(form.encode("latin-1"), maintype="text", subtype="plain", filename="form.txt")
    install.drop(msg)
    install.run_once()
    [review] = install.sent()
    assert "Attached Co" in review.text
    assert install.requests()[0]["account_domain"] == "attached.example"


@pytest.mark.both_databases
def test_the_loop_guard_caps_answers_per_address_and_hour(install: Install) -> None:
    install.write_config("[workflow]\nmax_emails_per_address_per_hour = 2\n")
    for n in range(4):
        msg = request_email({}, message_id=f"<help{n}@partner.example>")
        msg.set_content("HELP\n")
        install.drop(msg)
    install.run_once()
    assert len(install.sent()) == 2
    assert install.log().count("WARNING email.suppressed kind=help to=paula@partner.example reason=rate_limit") == 2


def test_our_emails_tell_auto_responders_not_to_answer(install: Install) -> None:
    install.drop((EXAMPLES / "request-en.eml").read_bytes())
    install.run_once()
    [review] = install.sent()
    assert review.msg["Auto-Submitted"] == "auto-replied"
    assert review.msg["X-Auto-Response-Suppress"] == "All"
