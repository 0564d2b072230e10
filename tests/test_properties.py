"""Bad input of any kind: property-based tests over raw bytes and form values (issue 6, item 3).

In-process: one App per test function (Maildirs in tmp_path, a FixedClock; the fuzz tests run
on SQLite and on PostgreSQL, the size tests on SQLite), fed through `ingest.handle` as the loop
feeds it. DESIGN §4: whatever arrives,
handling gives a clear outcome (a folder, an outbox row, a log line) and never raises;
DESIGN §3/STYLE: no form value can add a header, `{{ … }}` renders literally, HTML in
values is escaped in the HTML part.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import html
import itertools
import logging
import time
import tracemalloc
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import config as config_mod

from daemon.app import App, build
from daemon.clock import FixedClock
from daemon.mail.mailbox import InboxMessage
from models.message import Folder
from models.outbox import OutboxRow

# `any_app` tests are about what each database accepts (PostgreSQL is the stricter): all on both (tests/pg.py).
pytestmark = pytest.mark.both_databases

# One App per test function serves all its examples. report_multiple_bugs=False: shrink one
# failure well rather than several slowly, so a failing run stays short.
FUZZ = settings(deadline=None, report_multiple_bugs=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
OUR_ADDRESS = "smart-accounts@example.com"
# Every header the renderer writes (daemon/mail/render.py Renderer.compose); nothing else may appear.
TOP_HEADERS = {"from", "to", "subject", "date", "message-id", "in-reply-to", "references", "reply-to",
               "auto-submitted", "x-auto-response-suppress", "content-language", "mime-version",
               "content-type", "content-transfer-encoding"}
PART_HEADERS = {"content-type", "content-transfer-encoding", "mime-version"}
# Events that say what became of one incoming message.
OUTCOME_EVENTS = {"message.ignored", "message.refused", "message.not_a_request", "message.too_large", "message.duplicate",
                  "bounce.ignored", "bounce.received", "request.created", "request.rejected", "reply.refused",
                  "help.answered", "status.answered", "status.refused", "email.suppressed"}
LABELS = {"account_name": "Account Name", "customer_email": "Customer Email", "account_domain": "Account Domain",
          "note_to_customer": "Note to Customer", "user_emails": "User Emails",
          "note_to_users": "Note to Added Users"}


def _app(tmp_path: Path, database_url: str | None) -> Iterator[App]:
    cfg = config_mod.from_dict(
        {"mailbox": {"path": "inbox"}, "smtp": {"path": "outbox"},
         "database": {"url": database_url or "sqlite:///smartacct.db"},
         "workflow": {"partner_domains": ["*"]}},   # any sender: the fuzzed ones too
        base=tmp_path, environ={})
    application = build(cfg, clock=FixedClock())
    yield application
    application.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    """SQLite only: for the size and memory tests, where the database is not the point."""
    yield from _app(tmp_path, None)


@pytest.fixture
def any_app(tmp_path: Path, database_url: str | None) -> Iterator[App]:
    """On SQLite and on PostgreSQL (tests/pg.py), which is stricter about what text it stores."""
    yield from _app(tmp_path, database_url)


@pytest.fixture
def events(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="smartacct")
    return caplog


def said(events: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in events.records if r.name == "smartacct"]


_counter = itertools.count(1)
RUN = uuid.uuid4().hex[:12]       # Message-IDs unique across runs too


def handle(app: App, raw: bytes, key: str | None = None) -> Folder:
    """ingest.handle, asserting the contract: a Folder, never an exception (DESIGN §4). The
    per-message boundary (daemon.engine.attempts) would catch one, but every one is a bug."""
    item = InboxMessage(key or f"msg{next(_counter)}", raw, len(raw))
    try:
        folder = app.ingest.handle(item, app.attempts.begin(item).raw_hash).folder
    except Exception as exc:  # the assertion below names the input; pytest shows the traceback
        raise AssertionError(
            f"BUG: ingest.handle raised {type(exc).__name__}: {exc} on input {raw[:600]!r}"
            f"{'…' if len(raw) > 600 else ''} ({len(raw)} bytes); DESIGN §4 wants a clear outcome, "
            f"never a crash") from exc
    assert isinstance(folder, Folder)
    return folder


def new_rows(since: int) -> list[OutboxRow]:
    return list(OutboxRow.select().where(OutboxRow.id > since).order_by(OutboxRow.id))


def last_row_id() -> int:
    row = OutboxRow.select(OutboxRow.id).order_by(OutboxRow.id.desc()).first()
    return row.id if row else 0


def check_outgoing(raw: bytes) -> EmailMessage:
    """What any email we send must look like: only our headers, one To, no Bcc/Cc, a one-line Subject."""
    head, sep, _ = raw.partition(b"\r\n\r\n")
    assert sep, "no CRLF CRLF between header and body"
    assert b"\r" not in head.replace(b"\r\n", b"") and b"\n" not in head.replace(b"\r\n", b""), \
        f"a bare CR or LF in the header block: {head[:2000]!r}"
    names = [line.split(b":", 1)[0].decode("ascii", "replace").lower()
             for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")]
    assert set(names) <= TOP_HEADERS, f"unexpected header(s) {set(names) - TOP_HEADERS}: {head[:2000]!r}"
    assert len(names) == len(set(names)), f"a header appears twice: {names}"
    longest = max(len(line) for line in raw.split(b"\r\n"))
    assert longest <= 998, f"a line of {longest} bytes (RFC 5322 §2.1.1: at most 998)"
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert len(msg.get_all("To") or []) == 1 and len(msg["To"].addresses) == 1, f"To: {msg.get_all('To')}"
    assert msg["Bcc"] is None and msg["Cc"] is None
    subject = str(msg["Subject"])
    assert subject and "\n" not in subject and "\r" not in subject, f"Subject {subject!r}"
    for part in msg.walk():
        if part is not msg:
            extra = {k.lower() for k in part.keys()} - PART_HEADERS
            assert not extra, f"unexpected MIME part header(s) {extra}"
    htmls = [p for p in msg.walk() if p.get_content_type() == "text/html"]
    assert htmls, "no text/html part"
    for part in htmls:
        assert "<script" not in part.get_content().lower(), "unescaped <script> in the HTML part"
    return msg


def text_and_html(msg: EmailMessage) -> tuple[str, str]:
    plain = msg.get_body(preferencelist=("plain",))
    rich = msg.get_body(preferencelist=("html",))
    assert plain is not None and rich is not None
    return plain.get_content(), rich.get_content()


# --- 1. arbitrary bytes ------------------------------------------------------------------------

FRAGMENTS = [
    b"From: ", b"From: Paula <paula@partner.example>", b"From: MAILER-DAEMON", b"From: <>",
    b"From: =?utf-8?b?UGF1bGE=?= <paula@partner.example>", b"From: Big Bug bb@bug.com",
    b"From: \"Millions Lottery\"@example.com>", b"From: a@b, c@d", b"From: @", b"From: x@[1.2.3.4]",
    b"From: a@\xe2\x98\x83.net", b"From: J\xf6rg <j@m\xfcller.example>", b"@\xd7", b"charset=\"a\x00b\"",
    b"To: smart-accounts@example.com", b"To: smart-accounts+abcdefghijklmnopqrstuvwxyz@example.com",
    b"Subject: ", b"Subject: Re: [SA-000001] Please review", b"Subject: Out of Office",
    b"Subject: =?utf-8?q?=0D=0ABcc:_evil@x.example?=", b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=",
    b"=?utf-8?b?", b"?=", b"=?x-unknown?q?abc?=", b"=?utf-7?b?K0FHRS0=?=",
    b"Message-ID: <", b"Message-ID: <abc@x.example>", b"Message-ID: <>", b">", b"<", b"Message-ID: <a\x00b@x>",
    b"In-Reply-To: <abc.sa-000001@example.com>", b"References: <a@b> <c@d> garbage <",
    b"Return-Path: <>", b"Auto-Submitted: auto-replied", b"Auto-Submitted: no", b"Precedence: bulk",
    b"MIME-Version: 1.0", b"Content-Type: multipart/mixed; boundary=\"b1\"", b"Content-Type: multipart/mixed",
    b"Content-Type: multipart/alternative; boundary=b1", b"Content-Type: text/plain; charset=\"utf-8\"",
    b"Content-Type: text/plain; charset=\"no-such-charset\"", b"Content-Type: text/html",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"",
    b"Content-Type: message/delivery-status", b"Content-Type: message/rfc822",
    b"Content-Disposition: attachment; filename=\"form.txt\"", b"Content-Disposition: attachment; filename*=",
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Transfer-Encoding: x-uuencode", b"begin 644 form.txt",
    b"--b1", b"--b1--", b"--", b"=\r\n", b"=XX", b"=C3=A4", b"QWNjb3VudCBOYW1lOiBBY21l", b"====",
    b"Status: 5.1.1", b"Original-Message-ID: <abc.sa-000001@example.com>", b"Action: failed",
    b"Account Name: Acme", b"Kontoname: Acme", b"Customer Email: carla@acme.example",
    b"Account Domain: acme.example", b"Account Domain: xn--", b"User Emails: a@b, c@d; e@f",
    b"Language: de", b"CONFIRM", b"ACCEPT", b"STATUS SA-000001", b"HELP", b"> quoted", b"-- ",
    b"STATUS SA-99999999999999999999999", b"[SA-" + b"9" * 5000 + b"]",
    b"<html><body><p>", b"<blockquote>", b"</div>", b"<br>", b"&amp;", b"&#0;", b"<!--", b"<script>",
    b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\n\n", b" ", b"\t", b":", b";", b"\"", b"\\",
    b"\x00", b"\x00" * 64, b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf", b"\xc3\x28", b"\xe2\x80\xa8", b"\xc2\x85",
    b"\x80\x81\x82", b"\xed\xa0\x80", b"x" * 2000, b"a" * 10_000,
]

_fragment = st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=24))
_raw_soup = st.lists(_fragment, max_size=80).map(b"".join)


@st.composite
def _shaped(draw: st.DrawFn) -> bytes:
    """Header lines, a blank line, then a body: closer to mail, so the parser goes deeper."""
    eol = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    headers = draw(st.lists(_raw_soup, min_size=1, max_size=12))
    body = draw(st.lists(_raw_soup, max_size=12))
    return eol.join(headers) + eol + eol + eol.join(body)


raw_messages = st.one_of(st.binary(max_size=4000), _raw_soup, _shaped())


@settings(FUZZ, max_examples=300)
@given(raw=raw_messages)
def test_any_bytes_give_a_folder_and_only_well_formed_mail(any_app: App, raw: bytes) -> None:
    app = any_app
    before = last_row_id()
    handle(app, raw)
    rows = new_rows(before)
    assert len(rows) <= 1, f"one incoming message queued {len(rows)} emails: {[r.kind for r in rows]}"
    for row in rows:
        assert row.recipient.lower() != OUR_ADDRESS, "we wrote to ourselves"
        check_outgoing(bytes(row.body))
    app.outbox.drain()


# --- 2. form values ----------------------------------------------------------------------------

DANGEROUS = [
    "\r", "\n", "\r\n", "\n\n", "\x00", "\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1b[31m", "\t",
    "{{ 7*7 }}", "{% raw %}", "{% endraw %}", "{{", "}}", "{#", "#}", "${7*7}", "{{ config }}",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "&lt;", "&amp;", "\"", "'", "<", ">",
    "Bcc: evil@x.example", "\r\nBcc: evil@x.example", "\nTo: other@x.example", "\r\n\r\n<html>",
    "=?utf-8?q?=0D=0ABcc:_evil@x.example?=", "=?", "?=", "Account Name: other", "-- ", "> quoted",
    "carla@acme{n}.example", "a@b, c@d", "x" * 120, "ä", "\u202e", "\ufeff", "\U0001f600", "ß",
]
_value = st.lists(st.one_of(st.sampled_from(DANGEROUS), st.text(max_size=20)), max_size=8).map("".join)


def request_raw(fields: dict[str, str], sender: str, n: int, *, exact: bool) -> bytes:
    """A request as a mail client sends it; `exact` carries the body as base64 so no character is lost."""
    body = "Hello,\n\nplease create this account:\n\n" + "".join(
        f"{LABELS[k]}: {v}\n" for k, v in fields.items()) + "\nThanks\n-- \nPaula Partner\n"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = OUR_ADDRESS
    msg["Subject"] = "Smart Account request"
    msg["Date"] = email.utils.formatdate()
    # Not make_msgid(): hypothesis seeds `random`, so two examples in one centisecond would share an id.
    msg["Message-ID"] = f"<req{n}.{RUN}@partner.example>"
    if exact:
        msg.set_content(body.encode("utf-8", "surrogatepass"), maintype="text", subtype="plain", cte="base64")
        msg.set_param("charset", "utf-8")
    else:
        msg.set_content(body)
    return msg.as_bytes(policy=email.policy.SMTP)


def submit(app: App, fields: dict[str, str], *, exact: bool) -> tuple[str, EmailMessage]:
    """Send one request from a fresh partner (the loop guard stays out of the way); return its answer."""
    n = next(_counter)
    sender = f"paula{n}@partner.example"
    fields = {k: v.replace("{n}", str(n)) for k, v in fields.items()}
    before = last_row_id()
    handle(app, request_raw(fields, sender, n, exact=exact))
    rows = new_rows(before)
    assert len(rows) == 1, f"expected one review or rejection, got {[(r.kind, r.recipient) for r in rows]}"
    (row,) = rows
    assert row.kind in ("review", "rejection") and row.recipient == sender, (row.kind, row.recipient)
    return row.kind, check_outgoing(bytes(row.body))


def _base_fields() -> dict[str, str]:
    return {"account_name": "Acme Robotics", "customer_email": "carla@acme{n}.example",
            "account_domain": "acme{n}.example", "note_to_customer": "Please accept soon.",
            "user_emails": "dev1@acme{n}.example", "note_to_users": "Licences are under Inventory."}


@settings(FUZZ, max_examples=150)
@given(data=st.data(), exact=st.booleans(),
       which=st.sets(st.sampled_from(["account_name", "note_to_customer", "note_to_users", "customer_email"]),
                     min_size=1))
def test_form_values_never_reach_the_header(
        any_app: App, data: st.DataObject, exact: bool, which: set[str]) -> None:
    fields = _base_fields()
    for name in sorted(which):
        fields[name] = data.draw(_value, label=name)
    submit(any_app, fields, exact=exact)
    any_app.outbox.drain()


PAYLOADS = ["{{ 7*7 }}", "{% raw %}", "<script>alert(1)</script>", "{{ request.partner_email }}", "{# x #}"]
_plain = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!-"),
                 max_size=15).map(lambda t: " ".join(t.split()))   # names are stored with single spaces


@settings(FUZZ, max_examples=100)
@given(field=st.sampled_from(["account_name", "note_to_customer", "note_to_users"]),
       payload=st.sampled_from(PAYLOADS), prefix=_plain, suffix=_plain, exact=st.booleans())
def test_template_syntax_and_html_in_values_are_shown_literally(
        app: App, field: str, payload: str, prefix: str, suffix: str, exact: bool) -> None:
    value = " ".join(filter(None, ["Val", prefix, payload, suffix]))   # "Val": a bare "49" could be SA-000049
    fields = _base_fields()
    fields[field] = value
    kind, msg = submit(app, fields, exact=exact)
    assert kind == "review", f"a valid form was answered with a {kind}"
    text, rich = text_and_html(msg)
    assert value in text, f"{value!r} is not shown literally in the text part:\n{text}"
    assert html.escape(value, quote=False) in rich.replace("&#34;", '"').replace("&#39;", "'"), \
        f"{value!r} is not shown escaped in the HTML part"
    if payload == "{{ 7*7 }}":
        assert value.replace(payload, "49") not in text + rich, "{{ 7*7 }} was evaluated"
    if field == "account_name":
        assert value in str(msg["Subject"]), f"Subject {msg['Subject']!r} lacks {value!r}"


# --- 3. extremes -------------------------------------------------------------------------------

def _headers(subject: str = "Smart Account request", extra: bytes = b"") -> bytes:
    return (b"From: Paula <paula@partner.example>\r\nTo: smart-accounts@example.com\r\n"
            b"Subject: " + subject.encode() + b"\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
            b"Message-ID: <" + f"x{next(_counter)}.{RUN}@partner.example".encode() + b">\r\n" + extra)


FORM = (b"Account Name: Acme Robotics\r\nCustomer Email: carla@acme.example\r\n"
        b"Account Domain: acme.example\r\n")


def outcome(app: App, events: pytest.LogCaptureFixture, raw: bytes, what: str) -> str:
    """Handle `raw`; there must be a folder and a log line saying what happened; outgoing mail well-formed."""
    before_log = len(said(events))
    before = last_row_id()
    started = time.monotonic()
    folder = handle(app, raw)
    took = time.monotonic() - started
    lines = said(events)[before_log:]
    assert set(lines) & OUTCOME_EVENTS, f"{what}: no log line says what happened (only {lines})"
    rows = new_rows(before)
    for row in rows:
        check_outgoing(bytes(row.body))
    result = f"{what}: {folder.value}, events {lines}, emails {[r.kind for r in rows]}, {took:.2f}s"
    print(result)
    return result


def test_deep_mime_nesting(app: App, events: pytest.LogCaptureFixture) -> None:
    depth = 200
    head = _headers() + b"MIME-Version: 1.0\r\n"
    parts = [b"Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n"]
    for i in range(1, depth):
        parts.append(f"--b{i - 1}\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n".encode())
    parts.append(f"--b{depth - 1}\r\nContent-Type: text/plain\r\n\r\n".encode() + FORM)
    for i in reversed(range(depth)):
        parts.append(f"\r\n--b{i}--\r\n".encode())
    outcome(app, events, head + b"".join(parts), f"{depth} levels of multipart/mixed")
    # Unterminated: every boundary opened, none closed, and message/rfc822 nesting as well.
    rfc822 = b"".join(_headers() + b"Content-Type: message/rfc822\r\n\r\n" for _ in range(depth))
    outcome(app, events, rfc822 + b"\r\n" + FORM, f"{depth} levels of message/rfc822")
    fresh = _headers() + b"MIME-Version: 1.0\r\n"
    outcome(app, events, fresh + b"".join(parts[:-depth]), f"{depth} unterminated multipart levels")


MEGABYTE_HEADERS = {
    "Subject": b"Subject: " + b"a" * 1_000_000,
    "X-Long": b"X-Long: " + b"a" * 1_000_000,
    "From": b"From: " + b"a" * 1_000_000 + b"@x.example",
    "To": b"To: " + b"a" * 1_000_000 + b"@x.example",
    "References": b"References: <" + b"a" * 1_000_000 + b"@x.example>",
    "Message-ID": b"Message-ID: <" + b"a" * 1_000_000 + b"@x.example>",
}


@pytest.mark.parametrize("header", MEGABYTE_HEADERS)
def test_a_one_megabyte_header_line(app: App, events: pytest.LogCaptureFixture, header: str) -> None:
    rest = {"From": b"Subject: x\r\nTo: smart-accounts@example.com\r\n",
            "To": b"From: paula@partner.example\r\nSubject: x\r\n",
            "Message-ID": b"From: paula@partner.example\r\nSubject: x\r\n"}.get(header, _headers())
    raw = rest + MEGABYTE_HEADERS[header] + b"\r\n\r\n" + FORM
    outcome(app, events, raw, f"a 1 MB {header} header")


@pytest.mark.parametrize("name", ["X-Field-{i}", "Received", "References", "Subject", "From"])
def test_ten_thousand_header_fields(app: App, events: pytest.LogCaptureFixture, name: str) -> None:
    fields = b"".join(f"{name.format(i=i)}: <v{i}@x.example>\r\n".encode() for i in range(10_000))
    raw = (b"Subject: x\r\nTo: smart-accounts@example.com\r\n" if name == "From" else _headers()) \
        + fields + b"\r\n" + FORM
    outcome(app, events, raw, f"10,000 {name} fields")


@pytest.mark.parametrize("raw", [b"\x00", b"\x00" * 1000, b"\x00" * 1_000_000, b"\x00\r\n\r\n\x00",
                                 b"", b"\r\n", b"\xff" * 1000],
                         ids=["nul", "1k-nul", "1M-nul", "nul-header-body", "empty", "crlf", "ff"])
def test_only_nul_or_junk_bytes(app: App, events: pytest.LogCaptureFixture, raw: bytes) -> None:
    outcome(app, events, raw, f"{len(raw)} bytes of {raw[:4]!r}")


def _big(kind: str, size: int) -> bytes:
    head = _headers() + b"MIME-Version: 1.0\r\n"
    if kind == "plain":
        line = b"All work and no play makes Jack a dull boy. " * 2 + b"\r\n"
        return head + b"Content-Type: text/plain\r\n\r\n" + FORM + b"\r\n" + line * ((size - len(head)) // len(line))
    if kind == "html":
        words = b"All work and no play makes Jack a dull boy. " * 20
        chunk = b"<div><p>" + words + b"<b>Jack</b> " + words + b"</p><blockquote>quoted</blockquote></div>\r\n"
        return (head + b"Content-Type: text/html\r\n\r\n<html><body><pre>" + FORM + b"</pre>"
                + chunk * ((size - len(head)) // len(chunk)))
    line = b"QWxsIHdvcmsgYW5kIG5vIHBsYXkgbWFrZXMgSmFjayBhIGR1bGwgYm95LiBBbGwgd29yayBhbmQg\r\n"
    return (head + b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            + FORM + b"\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=\"big.pdf\"\r\n\r\n"
            + line * ((size - len(head) - 400) // len(line)) + b"\r\n--b--\r\n")


PEAK_LIMIT = 400_000_000


@pytest.mark.parametrize("kind", ["plain", "html", "attachment"])
def test_a_25_mb_message_in_bounded_memory(app: App, events: pytest.LogCaptureFixture, kind: str) -> None:
    raw = _big(kind, 24_900_000)       # just under max_message_size (25MB): read and parsed whole
    assert len(raw) <= app.config.mailbox.max_message_size
    tracemalloc.start()
    try:
        result = outcome(app, events, raw, f"a {len(raw) / 1e6:.1f} MB {kind} message")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"  peak traced memory while handling it: {peak / 1e6:.0f} MB")
    assert peak < PEAK_LIMIT, f"{result}: peak memory {peak / 1e6:.0f} MB"


def test_a_message_over_the_size_limit_is_read_as_header_only(
        app: App, events: pytest.LogCaptureFixture) -> None:
    raw = _big("attachment", 26_000_000)
    mailbox = app.mailbox            # the configured Maildir; creates new/, cur/, tmp/
    (app.config.mailbox.path / "new" / "big.eml").write_bytes(raw)
    tracemalloc.start()
    try:
        (item,) = list(mailbox.fetch())
        before = last_row_id()
        folder = app.ingest.handle(item, app.attempts.begin(item).raw_hash).folder
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert item.truncated and len(item.raw) < 10_000
    lines = said(events)
    assert "message.too_large" in lines, lines
    (row,) = new_rows(before)
    assert row.kind == "rejection" and row.recipient == "paula@partner.example"
    check_outgoing(bytes(row.body))
    print(f"26 MB message: {folder.value}, {lines}, peak {peak / 1e6:.1f} MB")
    assert peak < 50_000_000


# --- 4. crashes found by the corpus and by the tests above, kept as plain examples -----------------

@pytest.mark.parametrize("from_header", [
    b"Big Bug bb@bug.com", b"\"Millions Lottery Spain transfer\"@example.com>", b"Test test@example.com",
    b"\"a b\"@example.com", b"@*", b"@\x00",
    b"a@\xe2\x98\x83.net",      # UTF-8 snowman domain: valid in IDNA2003, disallowed in IDNA2008
    b"!@\xd7",                  # a raw Latin-1 byte in the domain
])
def test_an_unusual_from_address_is_answered_or_ignored_not_crashed(
        app: App, events: pytest.LogCaptureFixture, from_header: bytes) -> None:
    raw = (b"From: " + from_header + b"\r\nTo: smart-accounts@example.com\r\nSubject: hello\r\n"
           b"Message-ID: <" + f"f{next(_counter)}.{RUN}@x.example".encode() + b">\r\n\r\nHello there.\r\n")
    outcome(app, events, raw, f"From: {from_header!r}")


@pytest.mark.parametrize("raw", [
    b"Subject: status\r\n\r\nSTATUS SA-99999999999999999999999\r\n",         # beyond a 64-bit id
    b"Subject: Re: [SA-99999999999999999999999] review\r\n\r\nSTATUS\r\n",
    b"Subject: status\r\n\r\nSTATUS SA-" + b"9" * 5000 + b"\r\n",              # beyond int() of 4300 digits
], ids=["23-digit-ref", "23-digit-ref-in-subject", "5000-digit-ref"])
def test_a_reference_too_big_for_the_database(
        any_app: App, events: pytest.LogCaptureFixture, raw: bytes) -> None:
    """An SA- reference is "SA-" and six or more digits; a partner may mistype many more."""
    head = b"From: paula@partner.example\r\nMessage-ID: <" + f"r{next(_counter)}.{RUN}@x.example".encode() + b">\r\n"
    outcome(any_app, events, head + raw, f"STATUS with {raw[:60]!r}")


NUL_HEADERS = {
    "message-id": b"From: paula@partner.example\r\nSubject: hi\r\nMessage-ID: <n\x00ul@x.example>\r\n",
    "references": b"From: paula@partner.example\r\nSubject: hi\r\nReferences: <n\x00ul@x.example>\r\n"
                  b"In-Reply-To: <n\x00ul@x.example>\r\n",
    "subject": b"From: paula@partner.example\r\nSubject: =?utf-8?q?a=00b?=\r\n",
    "display-name": b"From: =?utf-8?q?P=00aula?= <paula@partner.example>\r\nSubject: hi\r\n",
}


@pytest.mark.parametrize("where", NUL_HEADERS)
def test_a_nul_byte_in_a_header(any_app: App, events: pytest.LogCaptureFixture, where: str) -> None:
    """PostgreSQL refuses NUL in text columns; a message carrying one must still get a clear outcome."""
    outcome(any_app, events, NUL_HEADERS[where] + b"\r\nhello\r\n", f"a NUL byte in {where}")


def test_a_nul_in_a_charset_parameter(app: App, events: pytest.LogCaptureFixture) -> None:
    raw = (b"From: paula@partner.example\r\nSubject: hi\r\nContent-Type: text/plain; charset=\"a\x00b\"\r\n\r\n"
           b"hello \xe4\r\n")
    outcome(app, events, raw, "a NUL byte in the charset parameter, 8-bit body")



# --- 5. the daemon keeps running: a poison message is filed, and the mail behind it still flows ----

POISON = {
    "nul-in-charset": b"From: paula@partner.example\r\nSubject: hi\r\n"
                      b"Content-Type: text/plain; charset=\"a\x00b\"\r\n\r\nhello \xe4\r\n",
    "idna-sender": b"From: a@\xe2\x98\x83.net\r\nSubject: hi\r\nMessage-ID: <p2@x.example>\r\n\r\nhello\r\n",
    "huge-ref": b"From: paula@partner.example\r\nMessage-ID: <p3@x.example>\r\n\r\nSTATUS SA-" + b"9" * 5000 + b"\r\n",
    "nul-in-message-id": b"From: paula@partner.example\r\nSubject: hi\r\nMessage-ID: <p\x00@x.example>\r\n"
                         b"\r\nhello\r\n",
}


@pytest.mark.parametrize("poison", POISON)
def test_one_bad_message_never_stops_the_inbox(
        any_app: App, events: pytest.LogCaptureFixture, poison: str) -> None:
    """DESIGN §4: the per-message boundary in loop.ingest_waiting files every message, good or bad."""
    assert any_app.mailbox is not None   # the configured Maildir: creates new/, cur/, tmp/
    inbox = any_app.config.mailbox.path
    (inbox / "new" / "1.poison").write_bytes(POISON[poison])
    good = {k: v.replace("{n}", "9") for k, v in _base_fields().items()}
    (inbox / "new" / "2.good").write_bytes(request_raw(good, "pat@partner.example", next(_counter), exact=False))
    try:
        any_app.loop.ingest_waiting()
    except Exception as exc:
        raise AssertionError(
            f"BUG: {poison}: loop.ingest_waiting raised {type(exc).__name__}: {exc}; the daemon exits "
            f"and, as the message stays in the inbox, fails again on every restart") from exc
    left = sorted(p.name for sub in ("new", "cur") for p in (inbox / sub).iterdir())
    assert not left, f"{poison}: still in the inbox: {left}"
    lines = said(events)
    assert "request.created" in lines, lines
