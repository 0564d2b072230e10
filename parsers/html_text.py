"""HTML body -> plain text, so forms and reply keywords in HTML-only mail are read (DESIGN §2, §3).

Quotes survive as "> " lines: reply parsing must tell the answer from the quoted email.

The tokenizer is our own, after the WHATWG rules for the few states text extraction
needs, because Python 3.11's html.parser is quadratic on unterminated constructs
(`<!--`, `<![`, `<a ` without `>` ...: it searches to the end of the input for the
terminator, gives up, and searches again from the next character). Here every
search for a terminator either succeeds and moves past it, or fails and ends the
input, as a browser ends it at EOF: each character is looked at a bounded number
of times (DESIGN §4, STYLE "Bounded by construction").
"""

from __future__ import annotations

import html
import re

MAX_HTML = 4_000_000      # characters of HTML converted; the rest is dropped before tokenizing
MAX_OPEN = 1_000          # open elements tracked; deeper ones only break lines
MAX_QUOTE_DEPTH = 30      # "> " prefixes written per line, however deep the quote nesting
MAX_OUTPUT = 1_000_000    # characters of text produced; conversion stops there (parse_message keeps no more)


def html_to_text(markup: str) -> str:
    """Readable text of an HTML body; never raises, linear in len(markup)."""
    out = _HtmlText()
    _tokenize(markup[:MAX_HTML], out)
    return out.result()


# ----------------------------------------------------------------- tokenizer

_TAG_NAME = re.compile(r"[^\t\n\f\r />]*")
_SPACES_SLASHES = re.compile(r"[\t\n\f\r /]*")
_SPACES = re.compile(r"[\t\n\f\r ]*")
_ATTR_NAME = re.compile(r"[^\t\n\f\r />][^\t\n\f\r />=]*")
_UNQUOTED = re.compile(r"[^\t\n\f\r >]*")
# Raw text elements: their content is not markup, up to "</name" and a delimiter (WHATWG 13.2.5).
_RAW_TEXT = {name: re.compile(rf"</{name}[\t\n\f\r />]", re.IGNORECASE) for name in ("script", "style")}
# Only these attributes decide anything below; the others are skipped, not stored.
_KEPT_ATTRS = frozenset({"class", "type", "id", "style"})
# A numeric character reference this long is out of Unicode's range anyway, and int() refuses
# more than 4,300 digits (html.unescape raises ValueError on "&#" and 5,000 digits).
_HUGE_CHARREF = re.compile(r"&#[xX]?[0-9A-Fa-f]{9,};?")


def _unescape(text: str) -> str:
    if "&" not in text:
        return text
    return html.unescape(_HUGE_CHARREF.sub("\ufffd", text))


def _is_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _tokenize(s: str, out: _HtmlText) -> None:
    """Data, tags, comments and declarations, left to right; an unterminated construct ends the input."""
    n = len(s)
    pos = 0
    while pos < n and not out.full:
        lt = s.find("<", pos)
        if lt < 0:
            out.handle_data(_unescape(s[pos:]))
            return
        if lt > pos:
            out.handle_data(_unescape(s[pos:lt]))
        nxt = s[lt + 1:lt + 2]
        if _is_letter(nxt):
            end = _tag(s, lt + 1, out, closing=False)
        elif nxt == "/":
            after = s[lt + 2:lt + 3]
            if _is_letter(after):
                end = _tag(s, lt + 2, out, closing=True)
            elif after == ">":
                end = lt + 3                                   # "</>" is ignored
            elif not after:
                out.handle_data("</")
                return
            else:
                end = _past(s, ">", lt + 2)                    # bogus comment
        elif nxt == "!":
            if s.startswith("<!--", lt):
                end = _comment_end(s, lt + 4)
            else:
                end = _past(s, ">", lt + 2)                    # DOCTYPE, CDATA, <![if ...]>
        elif nxt == "?":
            end = _past(s, ">", lt + 2)                        # processing instruction: bogus comment
        else:
            out.handle_data("<")
            end = lt + 1
        if end < 0:
            return
        pos = end


def _past(s: str, terminator: str, start: int) -> int:
    """Index just after the next `terminator`, or -1: the construct runs to the end of the input."""
    found = s.find(terminator, start)
    return -1 if found < 0 else found + len(terminator)


def _comment_end(s: str, start: int) -> int:
    """"<!-->" and "<!--->" close at once (WHATWG abrupt closing); otherwise the next "-->"."""
    if s.startswith(">", start):
        return start + 1
    if s.startswith("->", start):
        return start + 2
    return _past(s, "-->", start)


def _run(pattern: re.Pattern[str], s: str, pos: int) -> tuple[str, int]:
    """The run of characters `pattern` takes at `pos` (all its patterns match the empty string too)."""
    m = pattern.match(s, pos)
    return (m.group(), m.end()) if m else ("", pos)


def _tag(s: str, start: int, out: _HtmlText, *, closing: bool) -> int:
    """A start or end tag whose name begins at `start`; returns the index after it, or -1 at EOF."""
    n = len(s)
    name, pos = _run(_TAG_NAME, s, start)
    name = name.lower()
    attrs: dict[str, str] = {}
    while True:
        pos = _run(_SPACES_SLASHES, s, pos)[1]
        if pos >= n:
            return -1
        if s[pos] == ">":
            pos += 1
            break
        attr, pos = _run(_ATTR_NAME, s, pos)          # at least one character: s[pos] is none of " /">"
        attr = attr.lower()
        pos = _run(_SPACES, s, pos)[1]
        value = ""
        if pos < n and s[pos] == "=":
            pos = _run(_SPACES, s, pos + 1)[1]
            if pos >= n:
                return -1
            quote = s[pos]
            if quote in "\"'":
                close = s.find(quote, pos + 1)
                if close < 0:
                    return -1
                value, pos = s[pos + 1:close], close + 1
            else:
                value, pos = _run(_UNQUOTED, s, pos)
        if attr in _KEPT_ATTRS and attr not in attrs:         # the first of duplicates wins (WHATWG)
            attrs[attr] = _unescape(value)
    if closing:
        out.handle_endtag(name)
        return pos
    out.handle_starttag(name, attrs)
    raw_end = _RAW_TEXT.get(name)
    if raw_end is None:
        return pos
    found = raw_end.search(s, pos)             # script or style: never shown, so never handed on
    return found.start() if found else -1


# ----------------------------------------------------------------- text

_BLOCK = {
    "p", "div", "section", "article", "header", "footer", "table", "tr", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "pre", "hr", "dl", "dt", "dd", "address", "center",
    "form", "fieldset", "main", "nav", "aside", "figure", "tbody", "thead", "tfoot", "body", "html",
}
_SKIP = {"script", "style", "head", "title", "template", "noscript", "object", "svg"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "param",
         "source", "track", "wbr"}
_WHITESPACE = re.compile(r"[ \t\r\n\f\u200b]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _HtmlText:
    """Blocks and <br> become line breaks; <blockquote> and mail clients' quote containers
    become "> " lines, so reply parsing sees the quote (DESIGN §3)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current: list[str] = []
        self.stack: list[tuple[str, bool]] = []   # (tag, opened a quote level)
        self.quote = 0
        self.skip = 0
        self.pre = 0
        self.size = 0                             # characters in self.lines so far
        self.full = False                         # MAX_OUTPUT reached: the tokenizer stops

    def handle_starttag(self, tag: str, attrs: dict[str, str]) -> None:
        if tag in _VOID:
            if tag == "br":
                self._break(force=True)
            elif tag == "hr":
                self._break()
            return
        if len(self.stack) >= MAX_OPEN:
            if tag in _BLOCK:
                self._break()
            return
        if tag in _SKIP:
            self.skip += 1
            self.stack.append((tag, False))
            return
        quotes = tag == "blockquote" or _is_quote_container(attrs)
        if tag in _BLOCK or quotes:
            self._break()
        if tag == "pre":
            self.pre += 1
        if tag in ("td", "th") and self.current:
            self.current.append(" ")
        if _is_reply_header(attrs):
            self._break()
            self.current.append("_" * 32)
            self._break()
        if quotes:
            self.quote += 1
        self.stack.append((tag, quotes))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        # Close up to the matching open tag; tolerate unbalanced markup.
        for i in range(len(self.stack) - 1, max(-1, len(self.stack) - 50), -1):
            if self.stack[i][0] == tag:
                for closed, quoted in reversed(self.stack[i:]):
                    self._close(closed, quoted)
                del self.stack[i:]
                return

    def _close(self, tag: str, quoted: bool) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if tag in _BLOCK or quoted:
            self._break()
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if quoted:
            self.quote = max(0, self.quote - 1)

    def handle_data(self, data: str) -> None:
        if self.skip or not data:
            return
        if self.pre:
            chunks = data.split("\n")
            for i, chunk in enumerate(chunks):
                if i:
                    self._break(force=True)
                self.current.append(chunk)
            return
        self.current.append(_WHITESPACE.sub(" ", data))

    def _prefix(self) -> str:
        return "> " * min(self.quote, MAX_QUOTE_DEPTH)

    def _break(self, force: bool = False) -> None:
        line = "".join(self.current)
        self.current = []
        line = line.replace("\xa0", " ")
        line = line.strip() if not self.pre else line.rstrip()
        if line or force:
            line = (self._prefix() + line).rstrip() if line else self._prefix().rstrip()
            self.lines.append(line)
            self.size += len(line) + 1
            self.full = self.size > MAX_OUTPUT

    def result(self) -> str:
        self._break()
        text = "\n".join(self.lines)
        return _BLANK_LINES.sub("\n\n", text).strip("\n")


def _is_quote_container(attrs: dict[str, str]) -> bool:
    """Gmail's gmail_quote, Yahoo's yahoo_quoted, Apple's type=cite and Thunderbird's moz-cite."""
    cls = attrs.get("class", "").lower()
    return ("gmail_quote" in cls.split() and "gmail_quote_container" not in cls) or "yahoo_quoted" in cls \
        or attrs.get("type", "").lower() == "cite" or "moz-cite-prefix" in cls


def _is_reply_header(attrs: dict[str, str]) -> bool:
    """Outlook marks its "From:/Sent:" block with id=divRplyFwdMsg or a border-top style."""
    ident = attrs.get("id", "").lower()
    style = attrs.get("style", "").lower().replace(" ", "")
    return ident.startswith("divrplyfwdmsg") or (
        "border-top:solid" in style and ("#b5c4df" in style or "#e1e1e1" in style))
