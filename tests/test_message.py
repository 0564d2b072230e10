"""parse_message on hand-made messages: fields, decoding, text choice, attachments, auto/bounce marks.

The HTML converter has its own tests in test_html_text.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from email.message import EmailMessage

import pytest

from parsers.classify import MAX_AUTH_RESULTS, Ignore, classify, dmarc_passed
from parsers.message import MAX_ENCODED_WORDS, MAX_MIME_FIELD, MAX_MIME_PARAMS, parse_message


def _mail(body: str = "Hello", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = headers.pop("From", "Pat Partner <Pat@Partner.Example>")
    msg["To"] = headers.pop("To", "smart-accounts@example.com")
    msg["Subject"] = headers.pop("Subject", "Request")
    msg["Message-ID"] = headers.pop("Message_ID", "<abc@partner.example>")
    msg["Date"] = headers.pop("Date", "Tue, 24 Nov 2026 11:00:00 +0100")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def test_headers_and_addresses() -> None:
    msg = _mail(Cc="a@x.example, B <B@Y.example>", Reply_To="Desk <Desk@Partner.example>",
                In_Reply_To="<one@x>", References="<zero@x> <one@x>",
                Authentication_Results="mx.example.com; dmarc=pass header.from=partner.example")
    msg["Delivered-To"] = "inbox@example.com"
    p = parse_message(msg.as_bytes())
    assert p.message_id == "abc@partner.example"
    assert (p.sender, p.sender_name) == ("pat@partner.example", "Pat Partner")
    assert p.reply_to == "desk@partner.example"
    assert p.recipients == ("smart-accounts@example.com", "a@x.example", "b@y.example", "inbox@example.com")
    assert p.subject == "Request"
    assert p.date == dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)
    assert p.in_reply_to == ("one@x",)
    assert p.references == ("zero@x", "one@x")
    assert p.authentication_results == ("mx.example.com; dmarc=pass header.from=partner.example",)
    assert p.text.strip() == "Hello" and p.text_source == "plain"
    assert p.return_path is None
    assert p.size == len(msg.as_bytes()) and len(p.content_hash) == 64
    assert not p.is_automatic


def test_encoded_subject_and_display_name_are_decoded_and_collapsed() -> None:
    raw = (b"From: =?iso-8859-1?Q?J=FCrgen_M=FCller?= <j@x.de>\r\n"
           b"Subject: =?utf-8?B?QmVzdMOkdGlndW5n?=\r\n  und\tmehr\r\n\r\nx\r\n")
    p = parse_message(raw)
    assert p.sender_name == "Jürgen Müller"
    assert p.subject == "Bestätigung und mehr"


def test_quoted_printable_and_base64_bodies() -> None:
    qp = (b"From: a@x.example\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n\r\nKontoname: M=C3=BCller =\r\nGmbH\r\n")
    assert parse_message(qp).text.strip() == "Kontoname: Müller GmbH"
    b64 = (b"From: a@x.example\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nQWNjb3VudCBOYW1lOiBBY21l\r\n")
    assert parse_message(b64).text.strip() == "Account Name: Acme"


@pytest.mark.parametrize(
    ("charset", "body", "expected"),
    [
        (b"iso-8859-1", "Grüße".encode("latin-1"), "Grüße"),
        (b"utf-8", "Grüße €".encode(), "Grüße €"),
        (b"x-no-such-charset", "Grüße".encode(), "Grüße"),          # unknown label, UTF-8 bytes
        (b"us-ascii", "Grüße".encode("cp1252"), "Grüße"),          # mislabelled 8-bit
    ],
)
def test_charsets_are_decoded_leniently(charset: bytes, body: bytes, expected: str) -> None:
    raw = (b"From: a@x.example\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=" + charset
           + b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body + b"\r\n")
    assert parse_message(raw).text.strip() == expected


def test_html_only_body_becomes_text_with_quotes() -> None:
    msg = _mail()
    msg.set_content(
        "<html><head><style>p{color:red}</style><script>alert(1)</script></head><body>"
        "<div>CONFIRM</div><div>Thanks &amp; bye<br>Pat</div>"
        "<blockquote><p>Please reply CONFIRM</p><p>Ref: SA-000042</p></blockquote></body></html>",
        subtype="html",
    )
    p = parse_message(msg.as_bytes())
    assert p.text_source == "html"
    assert p.text.split("\n") == ["CONFIRM", "Thanks & bye", "Pat", "> Please reply CONFIRM", "> Ref: SA-000042"]


def test_attached_txt_is_the_text_when_there_is_no_body() -> None:
    msg = EmailMessage()
    msg["From"] = "a@x.example"
    msg.add_attachment("Account Name: Acme\n", filename="form.txt")
    p = parse_message(msg.as_bytes())
    assert (p.text.strip(), p.text_source) == ("Account Name: Acme", "attachment")


def test_plain_body_wins_over_attached_txt() -> None:
    msg = _mail("Body text")
    msg.add_attachment("attached\n", filename="form.txt")
    p = parse_message(msg.as_bytes())
    assert (p.text.strip(), p.text_source) == ("Body text", "plain")


def test_attachment_text_is_filled_even_when_the_body_has_text() -> None:
    msg = _mail("Hello, see attached form.\n\nPat")
    msg.add_attachment("Account Name: Acme\r\nAccount Domain: acme.example\r\n", filename="form.txt")
    p = parse_message(msg.as_bytes())
    assert (p.text.strip(), p.text_source) == ("Hello, see attached form.\n\nPat", "plain")
    assert p.attachment_text == "Account Name: Acme\nAccount Domain: acme.example\n"


def _with_attachment(part_headers: bytes, payload: bytes) -> bytes:
    return (b"From: a@x.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
            b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsiehe Anhang\r\n"
            b"--B\r\n" + part_headers + b"\r\n" + payload + b"\r\n--B--\r\n")


def test_iso_8859_1_attachment_is_decoded() -> None:
    raw = _with_attachment(
        b"Content-Type: text/plain; charset=ISO-8859-1; name=formular.txt\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"Content-Disposition: attachment; filename=formular.txt\r\n",
        b"Kontoname: M=FCller Stra=DFenbau GmbH\r\nKontodom=E4ne: mueller.example\r\n")
    p = parse_message(raw)
    assert p.text.strip() == "siehe Anhang"
    assert p.attachment_text == "Kontoname: Müller Straßenbau GmbH\nKontodomäne: mueller.example\n"


def test_notepad_utf16_attachment_is_decoded_by_its_byte_order_mark() -> None:
    data = base64.b64encode("Kontoname: Müller\r\n".encode("utf-16")).decode()
    raw = _with_attachment(b"Content-Type: application/octet-stream; name=form.txt\r\n"
                           b"Content-Transfer-Encoding: base64\r\n"
                           b"Content-Disposition: attachment; filename=form.txt\r\n", data.encode())
    assert parse_message(raw).attachment_text == "Kontoname: Müller\n"


def test_attachment_text_joins_files_skips_other_files_and_is_capped() -> None:
    msg = _mail("Body")
    msg.add_attachment("first\n", filename="a.txt")
    msg.add_attachment(b"\x89PNG\r\n", maintype="image", subtype="png", filename="logo.png")
    msg.add_attachment("not a form", filename="notes.csv")   # text/plain, but a named non-.txt file
    msg.add_attachment("second\n", filename="B.TXT")
    assert parse_message(msg.as_bytes()).attachment_text == "first\n\n\nsecond\n"

    big = _mail("Body")
    for name in ("a.txt", "b.txt", "c.txt"):
        big.add_attachment("x" * 600_000, filename=name)
    p = parse_message(big.as_bytes())
    assert len(p.attachment_text) == 1_000_000 and "attachment text truncated" in p.defects
    assert p.text.strip() == "Body"


def test_no_attachment_means_empty_attachment_text() -> None:
    assert parse_message(_mail("Account Name: Acme").as_bytes()).attachment_text == ""


def test_missing_message_id_and_headers() -> None:
    p = parse_message(b"\r\nonly a body\r\n")
    assert p.message_id is None and p.sender is None and p.subject == "" and p.date is None
    assert parse_message(b"Message-ID: <>\r\n\r\nx").message_id is None
    assert parse_message(b"Message-ID: bare@id.example\r\n\r\nx").message_id == "bare@id.example"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00" * 100,
        bytes(range(256)) * 40,
        b"From: \xff\xfe\x00<a@\x00b>\r\nSubject: \x00\xc3(\r\n\r\n\xc3(\x00",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; charset=zz\r\n\r\nhi",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary at all",
        b"Subject: =?utf-8?B?####?= =?x-unknown?Q?a?=\r\nDate: yesterday\r\n\r\n",
        b"From: " + b"(" * 5000 + b"\r\n\r\n",
        b"To: " + b"a:" * 5000 + b"\r\n\r\n",
    ],
)
def test_never_raises_on_garbage(raw: bytes) -> None:
    p = parse_message(raw)
    assert isinstance(p.text, str) and isinstance(p.subject, str) and "\n" not in p.subject
    assert p.size == len(raw)


def test_deep_nesting_does_not_raise() -> None:
    depth = 3000
    parts = [b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth)]
    raw = b"From: a@x.example\r\n" + b"".join(parts) + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    p = parse_message(raw)
    assert p.sender == "a@x.example"


def test_large_message_is_bounded() -> None:
    body = ("Zeile mit Text\n" * 1_800_000)           # ~27 MB
    p = parse_message(_mail(body).as_bytes())
    assert len(p.text) <= 1_000_000 and "text truncated" in p.defects


# ------------------------------------------------------------------ auto / bounce

@pytest.mark.parametrize(
    ("headers", "mark"),
    [
        ({"Auto_Submitted": "auto-replied"}, "auto-submitted:auto-replied"),
        ({"Auto_Submitted": "auto-generated (warning)"}, "auto-submitted:auto-generated"),
        ({"Auto_Submitted": "auto-notified"}, "auto-submitted:auto-notified"),
        ({"Precedence": "bulk"}, "precedence:bulk"),
        ({"Precedence": "auto_reply"}, "precedence:auto_reply"),
        ({"X_Autoreply": "yes"}, "header:x-autoreply"),
        ({"X_Autorespond": "x"}, "header:x-autorespond"),
        ({"X_Loop": "smartacct"}, "header:x-loop"),
        ({"List_Id": "<l.example>"}, "header:list-id"),
        ({"List_Unsubscribe": "<mailto:u@x>"}, "header:list-unsubscribe"),
        ({"X_MS_Exchange_Inbox_Rules_Loop": "a@x"}, "header:x-ms-exchange-inbox-rules-loop"),
        ({"Return_Path": "<>"}, "return-path:null"),
        ({"From": "No Reply <no-reply@shop.example>"}, "from:noreply"),
        ({"Reply_To": "noreply-dmarc-support@google.com"}, "reply-to:noreply"),
        ({"Subject": "Automatische Antwort: Ihre Anfrage"}, "subject:auto-reply"),
        ({"Subject": "Out of Office: Request"}, "subject:auto-reply"),
        ({"Subject": "Réponse automatique : Request"}, "subject:auto-reply"),
        ({"Subject": "Abwesenheitsnotiz"}, "subject:auto-reply"),
        ({"Subject": "AUTO: Pat is out of the office (returning 01/12/2026)"}, "subject:auto-reply"),
    ],
)
def test_auto_marks(headers: dict[str, str], mark: str) -> None:
    p = parse_message(_mail(**headers).as_bytes())
    assert mark in p.auto_marks and p.is_automatic and not p.is_bounce


def test_auto_submitted_no_and_exchange_suppress_are_human() -> None:
    p = parse_message(_mail(Auto_Submitted="no", X_Auto_Response_Suppress="All",
                            Subject="RE: Request SA-000042", In_Reply_To="<x@y>").as_bytes())
    assert p.auto_marks == () and not p.is_automatic


def test_human_subjects_that_mention_vacation_or_failure_are_not_marked() -> None:
    for subject in ("Re: our vacation policy", "Fwd: Undeliverable: Request", "Delivery of the laptops"):
        assert not parse_message(_mail(Subject=subject).as_bytes()).is_automatic, subject


def _dsn(status_lines: list[str], original_id: str = "<orig.sa-000042@example.com>") -> bytes:
    blocks = "\r\n".join(f"Final-Recipient: rfc822; c{i}@x.example\r\nAction: failed\r\nStatus: {s}\r\n"
                         for i, s in enumerate(status_lines))
    return (
        "From: MAILER-DAEMON@mx.example (Mail Delivery System)\r\nTo: smart-accounts@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nReturn-Path: <>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        f"{blocks}\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: smart-accounts@example.com\r\nMessage-ID: {original_id}\r\nSubject: Review\r\n\r\n"
        "--B--\r\n"
    ).encode()


def test_dsn_bounce_status_and_original_id() -> None:
    p = parse_message(_dsn(["4.2.2", "5.1.1", "4.4.1"]))
    assert p.is_bounce and p.is_automatic
    assert "content-type:multipart/report;delivery-status" in p.bounce_marks
    assert "part:message/delivery-status" in p.bounce_marks
    assert p.bounce_status == "5.1.1"
    assert p.bounced_message_ids == ("orig.sa-000042@example.com",)


def test_delay_dsn_has_transient_status() -> None:
    assert parse_message(_dsn(["4.4.7"])).bounce_status == "4.4.7"


def _report(dsn_part: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example (Mail Delivery System)\r\nTo: smart-accounts@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n"
        f"--B\r\n{dsn_part}\r\n"
        "--B\r\nContent-Type: message/rfc822\r\n\r\n"
        "From: smart-accounts@example.com\r\nMessage-ID: <orig@example.com>\r\nSubject: Review\r\n\r\nx\r\n"
        "--B--\r\n"
    ).encode()


def _b64(text: str) -> str:
    return base64.encodebytes(text.encode()).decode().replace("\n", "\r\n")


def test_dsn_recipient_block_in_base64_is_read() -> None:
    # Shape of corpus bounce/mimekit__bounce.eml: a gateway base64-encoded the recipient block.
    recipient = "Final-Recipient: rfc822; c@x.example\nAction: failed\nStatus: 5.1.1\n"
    p = parse_message(_report(
        "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + _b64(recipient)))
    assert p.bounce_status == "5.1.1" and p.bounced_message_ids == ("orig@example.com",)


def test_base64_encoded_global_dsn_is_read() -> None:
    # RFC 6533 allows a transfer encoding on message/global-delivery-status.
    fields = ("Reporting-MTA: dns; mx.example\n\nFinal-Recipient: utf-8; jürgen@x.example\n"
              "Action: delayed\nStatus: 4.4.7\nOriginal-Message-ID: <orig@example.com>\n")
    p = parse_message(_report("Content-Type: message/global-delivery-status\r\n"
                              "Content-Transfer-Encoding: base64\r\n\r\n" + _b64(fields)))
    assert p.bounce_status == "4.4.7" and p.bounced_message_ids == ("orig@example.com",)


@pytest.mark.parametrize(("action", "status"), [("failed", "5.0.0"), ("delayed", "4.0.0"), ("delivered", None)])
def test_dsn_without_status_falls_back_to_action(action: str, status: str | None) -> None:
    # Corpus bounce/mimekit__delivery-status.eml (1996) names no Status; RFC 3463 X.0.0 is "undefined".
    p = parse_message(_report(
        "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mm1\r\n\r\n"
        f"Final-Recipient: RFC822; c@x.example\r\nAction: {action}\r\n"
        "Diagnostic-Code: X-LOCAL; 500 (err.nosuchuser)\r\n"))
    assert p.is_bounce and p.bounce_status == status


def test_recipient_status_beats_a_stray_action_in_the_message_block() -> None:
    # Boxbe's challenge puts "Action: failed" among the per-message fields; the mail is only held.
    p = parse_message(_report(
        "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; boxbe.com\r\nAction: failed\r\n\r\n"
        "Final-Recipient: rfc822; c@x.example\r\nStatus: 4.7.0\r\n"))
    assert p.bounce_status == "4.7.0"


def test_mail_parser_does_not_warn_about_ordinary_mail(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    parse_message(_dsn(["5.1.1"]))      # has a text/rfc822-headers part
    assert [r.getMessage() for r in caplog.records if r.name.startswith("mailparser")
            and r.levelno >= logging.WARNING] == []


def test_legacy_text_bounce() -> None:
    raw = (b"From: Mail Delivery System <Mailer-Daemon@mx.example>\r\nTo: sa@example.com\r\n"
           b"Subject: Mail delivery failed: returning message to sender\r\nX-Failed-Recipients: c@x.example\r\n\r\n"
           b"c@x.example\r\n    SMTP error from remote mail server after RCPT TO:<c@x.example>:\r\n"
           b"    550 5.1.1 User unknown\r\n\r\n------ This is a copy of the message, including all the headers.\r\n"
           b"Message-ID: <orig@example.com>\r\nSubject: Review\r\n\r\nbody\r\n")
    p = parse_message(raw)
    assert {"header:x-failed-recipients", "from:mailer-daemon", "subject:bounce"} <= set(p.bounce_marks)
    assert p.bounce_status == "5.1.1" and p.bounced_message_ids == ("orig@example.com",)


def test_mdn_and_arf_are_automatic_not_bounces() -> None:
    for report_type in ("disposition-notification", "feedback-report"):
        raw = (f"From: c@x.example\r\nSubject: Read: Review\r\nMIME-Version: 1.0\r\n"
               f'Content-Type: multipart/report; report-type={report_type}; boundary="B"\r\n\r\n'
               f"--B\r\nContent-Type: text/plain\r\n\r\nread\r\n--B--\r\n").encode()
        p = parse_message(raw)
        assert "content-type:multipart/report" in p.auto_marks and not p.is_bounce


def test_postmaster_is_never_answered_but_not_a_bounce() -> None:
    # DESIGN §3 lists postmaster among the senders never answered, whoever writes from it.
    p = parse_message(_mail(From="Bob <postmaster@example.com>", Subject="Please enjoy this link").as_bytes())
    assert "from:system" in p.auto_marks and not p.is_bounce


# ------------------------------------------------------------------ list and system roles (issue 11)

LOOP_ALERT = ("Your message to the list was returned to you because it looped back to the list.\n"
              "If you think this is wrong, reply to this message.\n")


@pytest.mark.parametrize(
    ("sender", "mark"),
    [
        ("Sales List <sales-admin@partner.example>", "from:list-role"),      # Mailman 2's -admin address
        ("sales-admin+bounce=x@partner.example", "from:list-role"),
        ("Listmaster <listmaster@partner.example>", "from:system"),
        ("postmaster@partner.example", "from:system"),
        ("LISTSERV@partner.example", "from:system"),
        ("majordomo@partner.example", "from:system"),
    ],
)
def test_list_servers_and_postmaster_are_never_answered(sender: str, mark: str) -> None:
    # A "Loop Alert" with no list header at all, from a domain the sender rule lets through.
    msg = parse_message(_mail(LOOP_ALERT, From=sender, Subject="Loop Alert").as_bytes())
    assert mark in msg.auto_marks
    intent = classify(msg, partner_domains=("partner.example",), own_address="smart-accounts@example.com")
    assert isinstance(intent, Ignore) and intent.reason.startswith("automatic:")



# ------------------------------------------------------------------ header field limits (issue 11)

def _words(count: int) -> str:
    return " ".join(f"=?utf-8?q?w{i}?=" for i in range(count))


def _subject(value: str) -> bytes:
    return f"From: pat@partner.example\r\nSubject: {value}\r\n\r\nHello\r\n".encode()


def test_encoded_words_per_field_are_limited() -> None:
    # Adjacent encoded words join without the space between them (RFC 2047 §6.2).
    within = parse_message(_subject(_words(MAX_ENCODED_WORDS)))
    assert within.subject == "".join(f"w{i}" for i in range(MAX_ENCODED_WORDS))
    over = parse_message(_subject(_words(MAX_ENCODED_WORDS + 1)))
    assert over.subject == within.subject and "header field cut" in over.defects


def _koi8(content_type: str) -> bytes:
    return (f"From: pat@partner.example\r\nSubject: x\r\nContent-Type: {content_type}\r\n\r\n".encode()
            + "Привет".encode("koi8-r"))


def test_mime_parameters_per_field_are_limited() -> None:
    # MAX_MIME_PARAMS semicolons still reach the charset; one more cuts the field before it.
    params = "; ".join(f"x{i}=1" for i in range(MAX_MIME_PARAMS - 1))
    assert parse_message(_koi8(f"text/plain; {params}; charset=koi8-r")).text == "Привет"
    over = parse_message(_koi8(f"text/plain; {params}; x=1; charset=koi8-r"))
    assert over.text != "Привет" and "header field cut" in over.defects


def test_mime_fields_are_limited_in_length() -> None:
    head = "Content-Type: text/plain; x="
    tail = "; charset=koi8-r"
    fits = "text/plain; x=" + "a" * (MAX_MIME_FIELD - len(head) - len(tail)) + tail
    assert parse_message(_koi8(fits)).text == "Привет"
    over = parse_message(_koi8(fits.replace("x=a", "x=aa")))
    assert over.text != "Привет" and "header field cut" in over.defects


# ------------------------------------------------------------------ DMARC (DESIGN §3)

def _dmarc(*results: str) -> bool:
    headers = "".join(f"Authentication-Results: {value}\r\n" for value in results)
    raw = f"From: Pat <pat@partner.example>\r\nSubject: Re: Review\r\n{headers}\r\nCONFIRM\r\n".encode()
    return dmarc_passed(parse_message(raw), "MX.example.com")


def test_dmarc_counts_only_our_topmost_header_and_only_for_the_from_domain() -> None:
    ours = "mx.example.com; dmarc=pass (p=none dis=none) header.from=Partner.Example"
    assert _dmarc("relay.example; dmarc=fail header.from=partner.example", ours)
    # A header below ours that carries our name was added before our server saw the mail: forged.
    assert not _dmarc("mx.example.com; dmarc=fail header.from=partner.example", ours)
    assert not _dmarc("mx.example.com; dmarc=pass header.from=elsewhere.example")
    assert not _dmarc("mx.example.com; spf=pass smtp.mailfrom=partner.example")


def test_dmarc_headers_too_long_or_too_deep_are_not_a_pass() -> None:
    long = "mx.example.com; " + "spf=pass smtp.mailfrom=x; " * 400 + "dmarc=pass header.from=partner.example"
    assert len(long) > MAX_AUTH_RESULTS and not _dmarc(long)
    assert not _dmarc("mx.example.com; " + "(" * 5_000)        # authres recursed into the comments


def test_importing_the_parser_leaves_mail_parsers_log_level_alone() -> None:
    """The level is lowered only while mail-parser parses (issue 12): importing changes no one's logging."""
    import subprocess
    import sys

    code = ("import logging, parsers.message as m; before = logging.getLogger('mailparser').level; "
            "m.parse_message(b'From: a@x.example\\r\\nSubject: hi\\r\\n\\r\\nbody\\r\\n'); "
            "print(before, logging.getLogger('mailparser').level)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(logging.NOTSET)] * 2
