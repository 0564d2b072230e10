"""Parsing cost grows linearly with the input, whatever its shape (DESIGN §4, issue 11).

Each adversarial shape is fed at two sizes ten times apart: linear code takes about ten
times as long, quadratic code a hundred times. Measured in CPU time of this process
(time.process_time), the best of a few runs with the garbage collector paused, and from a
size where the small case takes long enough for timer noise not to matter, so a busy CI
machine does not make it flaky. Hypothesis then tries shapes nobody thought of.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import time
from dataclasses import dataclass
from typing import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.mail.render import Renderer
from parsers.classify import NewRequest, classify, dmarc_passed
from parsers.form import parse_form
from parsers.html_text import html_to_text
from parsers.message import parse_message
from parsers.reply import find_command, find_refs, reply_text, token_candidates
from parsers.validate import validate

GROWTH = 10           # the big input is this many times the small one
MAX_RATIO = 30        # linear comes out at 10-16 on a busy machine, quadratic at 100
MIN_SMALL = 0.020     # seconds; the small size is doubled until it takes this long
MAX_DOUBLINGS = 6     # ... at most this often
SMALL_BUDGET = 2.0    # seconds; a small case slower than this is a failure already
REPEAT = 3            # runs per size; the fastest counts


def _cpu(run: Callable[[str], object], arg: str) -> float:
    """The fastest of REPEAT runs, in CPU seconds; gc paused so a collection is not charged to one size."""
    best = math.inf
    gc.collect()
    gc.disable()
    try:
        for _ in range(REPEAT):
            start = time.process_time()
            run(arg)
            best = min(best, time.process_time() - start)
    finally:
        gc.enable()
    return best


@dataclass(frozen=True)
class Shape:
    name: str
    make: Callable[[int], str]          # size -> input
    run: Callable[[str], object]        # the parser under test
    n: int                              # the first size tried


def _html_mail(markup: str) -> bytes:
    return ("From: pat@partner.example\r\nTo: smart-accounts@example.com\r\nSubject: Re: Review\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n" + markup).encode()


def _parse_html_mail(markup: str) -> object:
    return parse_message(_html_mail(markup))


def _repeat(fragment: str) -> Callable[[int], str]:
    return lambda n: fragment * n


# Python 3.11's html.parser searches to the end of the input for the end of each unterminated
# construct, then again from the next character: quadratic on all of these.
HTML_SHAPES = [
    Shape("html <!-- via parse_message", _repeat("<!--"), _parse_html_mail, 2_000),
    *(Shape(f"html {fragment!r}", _repeat(fragment), html_to_text, 2_000) for fragment in (
        "<![", "<![CDATA[", "<?", "</", "</a", "<a ", "<a x", "<a x='", '<a x="', "<a/", "</script ")),
    # Each line used to carry one "> " per open quote.
    Shape("html nested quotes, one line each", lambda n: "<blockquote>" * n + "x<br>" * n, html_to_text, 1_000),
]

# A keyword line and quote headers are short lines; patterns on them used to backtrack
# quadratically on long ones (a run of trailing punctuation, "schrieb" many times without a colon).
REPLY_SHAPES = [
    Shape("reply trailing punctuation", lambda n: "A" + ". " * n + "x", find_command, 1_000),
    Shape("reply trailing emphasis", lambda n: "A" + "*_" * n + "x", find_command, 1_000),
    Shape("reply German quote header", lambda n: "STATUS\n" + "schrieb " * n + "x", find_command, 1_000),
]

def _text_bounce(body: str) -> bytes:
    return ("From: Mail Delivery System <mailer-daemon@mx.partner.example>\r\nTo: smart-accounts@example.com\r\n"
            "Subject: Mail delivery failed\r\nX-Failed-Recipients: c@x.example\r\n\r\n" + body).encode()


# A text-only bounce's body is searched for "Status: 5.1.1" and "Message-ID: <...>" lines; "^\s*"
# ran over every following blank line, again from each of them.
BOUNCE_SHAPES = [
    Shape("bounce blank lines", lambda n: "\n" * n + "x", lambda body: parse_message(_text_bounce(body)), 2_000),
    Shape("bounce blank CRLF lines", lambda n: "\r\n" * n + "x", lambda body: parse_message(_text_bounce(body)), 2_000),
]

def _mail(headers: str, body: str = "Hello\r\n") -> bytes:
    return ("From: pat@partner.example\r\nTo: smart-accounts@example.com\r\n" + headers
            + "\r\n" + body).encode()


def _with_part(part_headers: str) -> bytes:
    return _mail('Content-Type: multipart/mixed; boundary="b"\r\n',
                 "--b\r\n" + part_headers + "\r\n\r\nx\r\n--b--\r\n")


# The stdlib's email.header.decode_header pops the front of a list once per encoded word, and
# email.message._parseparam re-counts quotes and copies the rest of the field once per ";".
HEADER_SHAPES = [
    Shape("header encoded words in Subject", lambda n: "Subject: " + "=?utf-8?q?a?= " * n + "\r\n",
          lambda h: parse_message(_mail(h)), 1_000),
    Shape("header quoted ; in Content-Type", lambda n: 'Content-Type: text/plain; a="' + ";" * n + "\r\n",
          lambda h: parse_message(_mail(h)), 1_000),
    Shape("header quoted ; in a part's Content-Type", lambda n: 'Content-Type: text/plain; a="' + ";" * n,
          lambda h: parse_message(_with_part(h)), 1_000),
    Shape("header RFC 2231 parameters", lambda n: "Content-Disposition: attachment; "
          + "".join(f"filename*{i}=a; " for i in range(n)), lambda h: parse_message(_with_part(h)), 500),
    # The list-role pattern ran ".*$" into the line break of a folded Return-Path from every "-owner".
    Shape("header folded Return-Path", lambda n: "Return-Path: <" + "-owner-" * n + "\r\n x>\r\n",
          lambda h: parse_message(_mail(h)), 1_000),
    Shape("header encoded words in a file name", lambda n: 'Content-Disposition: attachment; filename="'
          + "=?utf-8?q?a?=" * n + '"', lambda h: parse_message(_with_part(h)), 1_000),
]

RENDERER = Renderer("Smart Accounts <smart-accounts@example.com>")


def _answer(references: str) -> bytes:
    """An answer threaded below a message with this References header (DESIGN §3)."""
    return RENDERER.compose("help", "en", {"ref": None, "request": None, "form": RENDERER.blank_form("en")},
                            to=["pat@partner.example"], message_id="x.sa@example.com",
                            date=dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc), references=references.split()).raw


# The Message-IDs of the mail we answer were de-duplicated with a list scan per id.
RENDER_SHAPES = [
    Shape("render References", lambda n: " ".join(f"<a{i}@x.example>" for i in range(n)), _answer, 4_000),
]

SHAPES = [*HTML_SHAPES, *REPLY_SHAPES, *BOUNCE_SHAPES, *HEADER_SHAPES, *RENDER_SHAPES]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_cost_grows_linearly(shape: Shape) -> None:
    n = shape.n
    small = _cpu(shape.run, shape.make(n))
    for _ in range(MAX_DOUBLINGS):
        if small >= MIN_SMALL:
            break
        n *= 2
        small = _cpu(shape.run, shape.make(n))
    assert small < SMALL_BUDGET, f"{shape.name}: {small:.2f} s already at size {n}"
    big = _cpu(shape.run, shape.make(GROWTH * n))
    ratio = big / max(small, MIN_SMALL)
    print(f"{shape.name}: {small * 1000:.1f} ms at {n}, {big * 1000:.1f} ms at {GROWTH * n}: x{ratio:.1f}")
    assert ratio < MAX_RATIO, (f"{shape.name}: {small * 1000:.1f} ms at size {n} but {big * 1000:.1f} ms "
                               f"at {GROWTH * n}: x{ratio:.0f}, super-linear")


# ------------------------------------------------------------------ shapes nobody thought of

PER_INPUT_CPU = 1.0       # seconds for everything below on one input; linear code needs a tenth of it
MAX_HOSTILE = 200_000     # characters of one generated input
# Pieces of the constructs every parser above treats specially, to be repeated and mixed.
FRAGMENTS = (
    "<!--", "-->", "<!", "<![", "<?", "</", "<a ", "<a x='", '<a x="', "<br>", "<blockquote>", "</blockquote>",
    "<div>", "<pre>", "<script>", "</script", "&#", "&#x", "&amp", "&", ";", '"', "'", "\\", "=", "=?utf-8?q?",
    "=?", "?=", "?", "\n", "\r\n", "\r", " ", "\t", "\u00a0", "\u200b", ">", "> ", "-", "--", "_", "*", "`", "~",
    ".", "!", ",", ":", "@", "(", ")", "<", "[", "](", "a", "7", "On ", "Am ", "wrote:", "schrieb", "Von:", "From:",
    "Sent:", "Status:", "550 ", "5.1.1", "Message-ID:", "Code:", "Ref: SA-000042 \u00b7 ", "SA-", "ACCEPT",
    "Account Name:", "User Emails:", "a@b.example", "filename*0=", "dmarc=pass", "header.from=",
)
PLACES = ("plain", "html", "subject", "cc", "references", "content-type", "part", "disposition", "auth", "bounce",
          "dsn", "attachment")


def _message(place: str, text: str) -> bytes:
    """`text` where a hostile sender can put it."""
    if place == "plain":
        return _mail("Content-Type: text/plain; charset=utf-8\r\n", text)
    if place == "html":
        return _mail("Content-Type: text/html; charset=utf-8\r\n", text)
    if place in ("subject", "cc", "references", "content-type", "auth"):
        name, prefix = {"subject": ("Subject", ""), "cc": ("Cc", ""), "references": ("References", ""),
                        "content-type": ("Content-Type", "text/plain; "),
                        "auth": ("Authentication-Results", "mx.example.com; ")}[place]
        return _mail(f"{name}: {prefix}{text}\r\nIn-Reply-To: {text[:2_000]}\r\n")
    if place == "part":
        return _with_part(f"Content-Type: text/plain; {text}")
    if place == "disposition":
        return _with_part(f"Content-Disposition: attachment; filename={text}")
    if place == "bounce":
        return _text_bounce(text)
    if place == "dsn":
        return _mail('Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n',
                     "--b\r\nContent-Type: message/delivery-status\r\n\r\n" + text + "\r\n--b--\r\n")
    return _mail('Content-Type: multipart/mixed; boundary="b"\r\n',
                 "--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=form.txt\r\n\r\n"
                 + text + "\r\n--b--\r\n")


def _everything(raw: bytes, text: str) -> None:
    """Every parser that sees untrusted text, on the message and on the bare text."""
    msg = parse_message(raw)
    intent = classify(msg, partner_domains=("partner.example",), own_address="smart-accounts@example.com")
    for form in (intent.form if isinstance(intent, NewRequest) else None, parse_form(text)):
        if form is not None:
            validate(form, max_users=50, require_customer_in_domain=True, default_language="en",
                     open_ref_for_domain=lambda domain: None)
    dmarc_passed(msg, "mx.example.com")
    token_candidates(msg, "example.com")
    find_refs(msg)
    find_command(text)
    reply_text(text)
    html_to_text(text)
    _answer(text)


RUNS = st.lists(st.tuples(st.sampled_from(FRAGMENTS), st.integers(1, 20_000)), min_size=1, max_size=6)


@given(place=st.sampled_from(PLACES), runs=RUNS)
def test_any_mix_of_hostile_fragments_is_parsed_in_bounded_time(place: str, runs: list[tuple[str, int]]) -> None:
    """A failure names the place and the runs of fragments; hypothesis prints how to replay it."""
    text = "".join(fragment * count for fragment, count in runs)[:MAX_HOSTILE]
    raw = _message(place, text)
    gc.collect()
    start = time.process_time()
    _everything(raw, text)
    took = time.process_time() - start
    assert took < PER_INPUT_CPU, f"{took:.2f} s of CPU for {len(text):,} characters in {place}"
