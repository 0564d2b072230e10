"""HTML body -> plain text, so forms and reply keywords in HTML-only mail are read (DESIGN §2, §3).

Quotes survive as "> " lines: reply parsing must tell the answer from the quoted email.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser


def html_to_text(markup: str) -> str:
    """Readable text of an HTML body; never raises."""
    parser = _HtmlText()
    try:
        parser.feed(markup)
        parser.close()
    except (AssertionError, ValueError, IndexError):  # html.parser's own failure modes
        return html.unescape(re.sub(r"<[^>]*>", " ", markup))
    return parser.result()


_BLOCK = {
    "p", "div", "section", "article", "header", "footer", "table", "tr", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "pre", "hr", "dl", "dt", "dd", "address", "center",
    "form", "fieldset", "main", "nav", "aside", "figure", "tbody", "thead", "tfoot", "body", "html",
}
_SKIP = {"script", "style", "head", "title", "template", "noscript", "object", "svg"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "param",
         "source", "track", "wbr"}


class _HtmlText(HTMLParser):
    """Blocks and <br> become line breaks; <blockquote> and mail clients' quote containers
    become "> " lines, so reply parsing sees the quote (DESIGN §3)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.stack: list[tuple[str, bool]] = []   # (tag, opened a quote level)
        self.quote = 0
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.lower()
        if tag in _SKIP:
            self.skip += 1
            if tag not in _VOID:
                self.stack.append((tag, False))
            return
        if tag == "br":
            self._break(force=True)
            return
        if tag in _VOID:
            if tag == "hr":
                self._break()
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
            self.lines.append(self._prefix() + "_" * 32)
        if quotes:
            self.quote += 1
        self.stack.append((tag, quotes))

    def handle_endtag(self, tag: str) -> None:
        tag = tag.lower()
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
        if self.skip:
            return
        if self.pre:
            chunks = data.split("\n")
            for i, chunk in enumerate(chunks):
                if i:
                    self._break(force=True)
                self.current.append(chunk)
            return
        self.current.append(re.sub(r"[ \t\r\n\f\u200b]+", " ", data))

    def _prefix(self) -> str:
        return "> " * self.quote

    def _break(self, force: bool = False) -> None:
        line = "".join(self.current)
        self.current = []
        line = line.replace("\xa0", " ")
        line = line.strip() if not self.pre else line.rstrip()
        if line or force:
            self.lines.append((self._prefix() + line).rstrip() if line else self._prefix().rstrip())

    def result(self) -> str:
        self._break()
        text = "\n".join(self.lines)
        return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _attr(attrs: list[tuple[str, str | None]], name: str) -> str:
    for key, value in attrs:
        if key.lower() == name:
            return (value or "").lower()
    return ""


def _is_quote_container(attrs: list[tuple[str, str | None]]) -> bool:
    """Gmail's gmail_quote, Yahoo's yahoo_quoted, Apple's type=cite and Thunderbird's moz-cite."""
    cls = _attr(attrs, "class")
    return ("gmail_quote" in cls.split() and "gmail_quote_container" not in cls) or "yahoo_quoted" in cls \
        or _attr(attrs, "type") == "cite" or "moz-cite-prefix" in cls


def _is_reply_header(attrs: list[tuple[str, str | None]]) -> bool:
    """Outlook marks its "From:/Sent:" block with id=divRplyFwdMsg or a border-top style."""
    ident = _attr(attrs, "id")
    style = _attr(attrs, "style").replace(" ", "")
    return ident.startswith("divrplyfwdmsg") or (
        "border-top:solid" in style and ("#b5c4df" in style or "#e1e1e1" in style))
