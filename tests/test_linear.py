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

from daemon.render import Renderer
from parsers.html_text import html_to_text
from parsers.message import parse_message
from parsers.reply import find_command

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
    Shape("header encoded words in a file name", lambda n: 'Content-Disposition: attachment; filename="'
          + "=?utf-8?q?a?=" * n + '"', lambda h: parse_message(_with_part(h)), 1_000),
]

RENDERER = Renderer("Smart Accounts <smart-accounts@example.com>")


def _answer(references: str) -> object:
    """An answer threaded below a message with this References header (DESIGN §3)."""
    return RENDERER.compose("help", "en", {"ref": None, "request": None, "form": RENDERER.blank_form("en")},
                            to=["pat@partner.example"], message_id="x.sa@example.com",
                            date=dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc), references=references.split())


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
