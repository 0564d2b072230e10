"""Every outgoing email, rendered from templates/ into finished bytes (DESIGN §1, §3).

One Jinja2 Environment per Renderer: templates are compiled once, on first use,
and cached (STYLE §4.6). Values are data, never templates. Anything that reaches
a header is forced onto one line first, so no form value can add a header.

The message is written out here, not built as an EmailMessage: the bytes are those the
stdlib's EmailMessage wrote (tests/test_render.py compares), without parsing every header
we set into a token tree only to print it again, which was most of an email's cost
(issue 16). Header values that are not plain ASCII still go through the stdlib's folder.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.resources
import random
import re
import sys
import unicodedata
import urllib.parse
from dataclasses import dataclass
from email import headerregistry, policy
from email.header import Header
from email.headerregistry import Address, AddressHeader
from email.utils import format_datetime
from importlib.resources.abc import Traversable
from typing import Any, Callable, Iterable, Mapping, Sequence

import idna
import jinja2

from parsers.reply import Keyword, spelling

KINDS = (
    "review",
    "rejection",
    "help",
    "request_complete",
    "activation",
    "activation_confirmation",
    "welcome",
    "user_notice",
    "declined",
    "cancelled_customer",
    "cancelled_partner",
    "reminder",
    "expired_customer",
    "expired_partner",
    "lapsed",
    "status",
    "late_reply",
    "delivery_failed",
    "answer",
    "decline_receipt",
)

AUTO_SUBMITTED = ("auto-replied", "auto-generated")   # RFC 3834; never "no"

_MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July",
           "August", "September", "October", "November", "December"),
    "de": ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli",
           "August", "September", "Oktober", "November", "Dezember"),
}
_DATE_FORMAT = {"en": "{day} {month} {year}", "de": "{day}. {month} {year}"}
LANGUAGES = tuple(_MONTHS)

class _CachedHeaderRegistry(headerregistry.HeaderRegistry):
    """The stdlib builds a new header class with type() on every header set; once per name is enough."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


_HEADERS = _CachedHeaderRegistry()
# The policies the message is written under: SMTP (CRLF, 78 columns, 8-bit bodies allowed), with
# UTF-8 headers when a recipient's address needs them. Only headers that are not plain ASCII
# (see _header) go through their header classes.
_SMTP = policy.SMTP.clone(header_factory=_HEADERS, refold_source="none")
_SMTPUTF8 = policy.SMTPUTF8.clone(header_factory=_HEADERS, refold_source="none")
_BARE_ADDRESS = re.compile(r'[^\s<>(),;:@"\[\]\\]+@[^\s<>(),;:@"\[\]\\]+')
_MESSAGE_ID = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")        # printable ASCII without < > and space
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_MAX_REFERENCES = 20                                       # RFC 5322 §3.6.4 allows trimming
_MAX_MESSAGE_ID = 980             # an id with "In-Reply-To: <>" fits one 998-character line (RFC 5322 §2.1.1)
_FOLD_AT = 78                     # RFC 5322 §2.1.1's recommended line length
_MAX_SUBJECT = 200
_MAX_LINE = 78                    # policy.SMTP.max_line_length: body lines, QP and base64 lines
# What the stdlib's folder writes back unchanged when the whole line fits in _FOLD_AT columns
# (tests/test_render.py compares): addr-specs of dot-atoms with an LDH domain, and the Date.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESSES = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                              rf"(?:, {_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)*")
_PLAIN_DATE = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-3][0-9] "
                         r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
                         r"[0-2][0-9]:[0-5][0-9]:[0-6][0-9] [+-][0-9]{4}")
_PLAIN_SUBJECT = re.compile(r"[!-~]+(?: [!-~]+)*")      # printable ASCII words, single spaces


@dataclass(frozen=True)
class OneClick:
    """One decision a reader can send with a click: the keyword in the email's language."""

    keyword: str            # CONFIRM, ACCEPT, …
    word: str               # as the language spells it: AKZEPTIEREN
    address: str            # the token's reply address
    subject: str
    href: str               # mailto: URL


@dataclass(frozen=True)
class Email:
    to: tuple[str, ...]     # bare addresses, for the SMTP envelope
    subject: str
    message_id: str         # without angle brackets
    raw: bytes              # the finished message, CRLF line ends, ready for SMTP


_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")   # Unicode categories Cc, Zl and Zp, exactly


def one_line(value: str) -> str:
    """Control and line-break characters become spaces, runs collapse: a value can never start a header."""
    return " ".join(_BREAKING.sub(" ", value).split())


def bare_address(value: str) -> str:
    """One bare addr-spec, the domain as IDNA A-label; ValueError for anything else (lists, names, CR/LF)."""
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("address contains control characters")
    value = value.strip()
    if not _BARE_ADDRESS.fullmatch(value):
        raise ValueError("not a single bare email address")
    local, _, domain = value.rpartition("@")
    if not domain.isascii():
        domain = idna.encode(domain, uts46=True).decode("ascii")   # idna.IDNAError is a ValueError
    return f"{local}@{domain}"


def _folded_subject(subject: str) -> str:
    """RFC 2047-encode and fold the subject ourselves.

    The 3.11 EmailPolicy folder can leave a space before a fold or fold right after
    "Subject:", so the subject a client decodes gains spaces. email.header folds
    cleanly; a literal "=?" is encoded too, so no text can pose as an encoded word.
    """
    if "=?" not in subject and len("Subject: ") + len(subject) <= _FOLD_AT and _PLAIN_SUBJECT.fullmatch(subject):
        return subject     # what Header gives a short plain line, without its formatter
    charset = "us-ascii" if subject.isascii() and "=?" not in subject else "utf-8"
    return Header(subject, charset, maxlinelen=78, header_name="Subject").encode(linesep="\r\n")


def _own_message_id(value: str) -> str:
    """Our own Message-ID comes from our code: a malformed one is a bug, not data to clean."""
    value = value.strip().removeprefix("<").removesuffix(">")
    if not _MESSAGE_ID.fullmatch(value):
        raise ValueError("message_id must be a single id-left@id-right without brackets")
    if len(value) > _MAX_MESSAGE_ID:
        raise ValueError("message_id is too long for one header line")
    return value


def _thread_ids(values: Iterable[str]) -> list[str]:
    """Their Message-IDs are untrusted: keep the well-formed ones, once each, in order. Seen ids are
    kept in a dict (a list scan per id was quadratic in a long References header), and an id too
    long for one header line is dropped."""
    ids: dict[str, None] = {}
    for value in values:
        for piece in one_line(value).replace("<", " ").replace(">", " ").split():
            if len(piece) <= _MAX_MESSAGE_ID and _MESSAGE_ID.fullmatch(piece):
                ids.setdefault(piece)
    return list(ids)


def _folded_ids(name: str, ids: list[str]) -> str:
    """"<a> <b> ..." folded between ids near _FOLD_AT characters; an id is never split, so a long
    one (Exchange's run to 90 characters) stays whole on a line of its own."""
    lines: list[str] = []
    line = ""
    width = len(name) + 2
    for piece in (f"<{i}>" for i in ids):
        if line and width + len(line) + 1 + len(piece) > _FOLD_AT:
            lines.append(line)
            line, width = "", 1
        line = f"{line} {piece}" if line else piece
    lines.append(line)
    return "\r\n ".join(lines)


def _trimmed(ids: list[str]) -> list[str]:
    """Keep the thread root and the most recent ids, as RFC 5322 suggests for long References."""
    if len(ids) <= _MAX_REFERENCES:
        return ids
    return ids[:1] + ids[-(_MAX_REFERENCES - 1):]


def _header(name: str, value: str, pol: policy.EmailPolicy[Any], plain: re.Pattern[str]) -> str:
    """One header field as `msg[name] = value` and the generator would write it under `pol`.

    A value matching `plain` that fits on one line is written as it is: that is what the
    stdlib's folder makes of it too, and parsing our own value into a token tree only to
    print it again was most of the cost of an email (issue 16). Anything else (non-ASCII
    addresses, long lists) goes through the stdlib's header class, which also refuses CR/LF.
    """
    if len(name) + 2 + len(value) <= _FOLD_AT and plain.fullmatch(value):
        return f"{name}: {value}\r\n"
    folded: str = pol.fold(*pol.header_store_parse(name, value))   # typeshed leaves EmailPolicy.fold unannotated
    return folded


_QP_SAFE = bytes(range(0x20, 0x7F)) + b"\t\n"     # what quoprimime's body map keeps, "=" aside
_QP_MARK = bytes(c if c in _QP_SAFE else 0 for c in range(256))   # every other byte becomes NUL
_QP_CODES = {bytes([c]): b"=%02X" % c for c in range(256)}
_QP_EOL = b"\n"


def _qp_escaped(data: bytes) -> bytes:
    """quoprimime's body map applied to bytes in C: "=" replaced, other runs found with find() and
    written with bytes.hex (a regex or str.translate costs ~10 ns a byte; most bytes are safe)."""
    data = data.replace(b"=", b"=3D")
    if not data.translate(None, _QP_SAFE):
        return data
    marked = data.translate(_QP_MARK)
    out: list[bytes] = []
    start, pos, size = 0, marked.find(0), len(marked)
    while pos >= 0:
        end = pos + 1
        while end < size and marked[end] == 0:
            end += 1
        out.append(data[start:pos])
        out.append(b"=" + data[pos:end].hex("=").upper().encode("ascii"))
        start = end
        pos = marked.find(0, end)
    out.append(data[start:])
    return b"".join(out)


def _qp_lines(data: bytes) -> tuple[list[bytes], list[int]]:
    """email.quoprimime.body_encode(data.decode("latin-1"), 78), line by line and in bytes: the
    escaping is done in C (_qp_escaped) instead of a per-character translate. Returns the encoded
    pieces (joined with LF, plus a final LF) and, per input line, how many pieces it ended on."""
    escaped = _qp_escaped(data)
    out: list[bytes] = []
    ends: list[int] = []
    soft = b"=" + _QP_EOL
    limit = _MAX_LINE - 1
    for line in escaped[:-1].split(b"\n"):            # data ends with LF (normal_body)
        if len(line) <= _MAX_LINE and line[-1:] not in (b" ", b"\t"):
            out.append(line)                            # the usual line: nothing to split or quote
            ends.append(len(out))
            continue
        start = 0
        laststart = len(line) - 1 - _MAX_LINE
        while start <= laststart:                       # the stdlib's splitting, step for step
            stop = start + limit
            if line[stop - 2] == 0x3D:                  # "=": never split an escape
                out.append(line[start:stop - 1])
                start = stop - 2
            elif line[stop - 1] == 0x3D:
                out.append(line[start:stop])
                start = stop - 1
            else:
                out.append(line[start:stop] + b"=")
                start = stop
        if line and line[-1] in (0x20, 0x09):           # whitespace at the end of a line is quoted
            room = start - laststart
            last = line[-1:]
            if room >= 3:
                out.append(line[start:-1] + _QP_CODES[last])
            elif room == 2:
                out.append(line[start:-1] + last + soft)
            else:
                out.append(line[start:-1] + soft + _QP_CODES[last])
        else:
            out.append(line[start:])
        ends.append(len(out))
    return out, ends


def _encoded_body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body with CRLF line ends): the choice and the bytes of
    EmailMessage.set_content(text, charset="utf-8") written under policy.SMTP. 7bit or 8bit
    when every line fits in 78 octets; else quoted-printable or base64, whichever is shorter
    over the first ten lines (email.contentmanager's heuristic)."""
    lines = text.encode("utf-8").splitlines()
    if max(map(len, lines), default=0) <= _MAX_LINE:
        body = b"\r\n".join(lines) + b"\r\n"
        return ("7bit" if body.isascii() else "8bit"), body
    pieces, ends = _qp_lines(b"\n".join(lines) + b"\n")
    first = lines[:10]
    sniff_end = ends[len(first) - 1]                 # the sniff: QP and base64 of the first ten lines
    sniff_qp = sum(map(len, pieces[:sniff_end])) + sniff_end
    sniff_raw = sum(map(len, first)) + 2 * len(first)
    if sniff_qp > 4 * -(-sniff_raw // 3) + 1:
        return "base64", base64.encodebytes(b"\r\n".join(lines) + b"\r\n").replace(b"\n", b"\r\n")
    return "quoted-printable", (_QP_EOL.join(pieces) + _QP_EOL).replace(b"\n", b"\r\n")


def _boundary(body: bytes) -> str:
    """A boundary as email.generator makes one (random, 19 digits), never found in the parts it
    separates. The generator's own check looks for it on a line ending in LF alone, so in CRLF
    parts it never finds it; any occurrence counts here."""
    boundary = candidate = "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="
    counter = 0
    while b"--" + candidate.encode("ascii") in body:
        candidate = f"{boundary}.{counter}"
        counter += 1
    return candidate


def _alternative(head: bytes, text: str, html: str, lang: str) -> bytes:
    """`head` and a multipart/alternative body of `text` and `html`, byte for byte what
    EmailMessage.set_content + add_alternative + as_bytes (policy.SMTP) wrote: the same part
    headers (the HTML part repeats MIME-Version, as add_alternative left it) and encodings."""
    parts = []
    for subtype, content, extra in (("plain", text, b""), ("html", html, b"MIME-Version: 1.0\r\n")):
        cte, body = _encoded_body(content)
        parts.append(b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: %s\r\n%s\r\n%s'
                     % (subtype.encode(), cte.encode(), extra, body))
    boundary = _boundary(b"\r\n".join(parts)).encode("ascii")
    return b"".join((
        head, b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="', boundary,
        b'"\r\nContent-Language: ', lang.encode("ascii"), b"\r\n\r\n--", boundary, b"\r\n", parts[0],
        b"\r\n--", boundary, b"\r\n", parts[1], b"\r\n--", boundary, b"--\r\n"))


def _check_lang(lang: str) -> None:
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}")


@jinja2.pass_context
def _format_date(context: jinja2.runtime.Context, value: dt.datetime) -> str:
    """'24 February 2027' / '24. Februar 2027': the UTC calendar date, no locale module involved."""
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise ValueError("the date filter needs an aware datetime")
    lang = context["lang"]
    day = value.astimezone(dt.timezone.utc)
    return _DATE_FORMAT[lang].format(day=day.day, month=_MONTHS[lang][day.month - 1], year=day.year)


class _PackageResourceLoader(jinja2.BaseLoader):
    """Reads the `templates` package through importlib.resources, so an installed (even zipped) copy works."""

    def __init__(self, package: str) -> None:
        self._root: Traversable = importlib.resources.files(package)

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        node = self._root
        for part in template.split("/"):
            if part in ("", ".", ".."):
                raise jinja2.TemplateNotFound(template)
            node = node.joinpath(part)
        if not node.is_file():
            raise jinja2.TemplateNotFound(template)
        return node.read_text(encoding="utf-8"), str(node), lambda: True


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith(".html.j2")


class Renderer:
    """Turns (kind, language, values) into a finished, threaded, injection-proof email."""

    def __init__(self, from_address: str) -> None:
        if any(unicodedata.category(ch) == "Cc" for ch in from_address):
            raise ValueError("from_address contains control characters")
        header = policy.default.header_factory("from", from_address)
        # Every header the registry makes has defects (BaseHeader); an address header, addresses too.
        if header.defects or not isinstance(header, AddressHeader) or len(header.addresses) != 1:
            raise ValueError("from_address must be exactly one address")
        parsed = header.addresses[0]
        self._from = Address(
            display_name=parsed.display_name,
            addr_spec=bare_address(parsed.addr_spec),
        )
        # The From field never changes: folded once per policy, as the stdlib writes it.
        self._from_field = {pol.utf8: pol.fold(*pol.header_store_parse("From", self._from))
                            for pol in (_SMTP, _SMTPUTF8)}
        self._env = jinja2.Environment(
            loader=_PackageResourceLoader("templates"),
            undefined=jinja2.StrictUndefined,
            autoescape=_autoescape,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,      # package data does not change under a running daemon
            cache_size=-1,          # never evict: each template is compiled exactly once
        )
        self._env.filters["date"] = _format_date

    def precompile(self) -> None:
        """Compile every template now: the daemon finds a broken one at start, and the first
        message it handles does not pay for compiling (nor against its CPU budget)."""
        for lang in LANGUAGES:
            self._env.get_template(f"form_{lang}.txt.j2")
            for kind in KINDS:
                self._env.get_template(f"{lang}/{kind}.txt.j2")
                self._env.get_template(f"{lang}/{kind}.html.j2")

    @property
    def environment(self) -> jinja2.Environment:
        """The one Environment, exposed so callers and tests can see templates are shared."""
        return self._env

    @property
    def from_addr(self) -> str:
        return self._from.addr_spec

    def reply_address(self, token: str | None) -> str:
        """The plus-address that carries the reply token back to us (DESIGN §3)."""
        if token is None:
            return self.from_addr
        if not _TOKEN.fullmatch(token):
            raise ValueError("token may hold only letters, digits, '_' and '-'")
        return f"{self._from.username}+{token}@{self._from.domain}"

    def blank_form(self, lang: str) -> str:
        """The blank request form (DESIGN §2), as `smartacct template` prints it."""
        _check_lang(lang)
        return self._env.get_template(f"form_{lang}.txt.j2").render(
            lang=lang, from_addr=self.from_addr
        )

    def compose(
        self,
        kind: str,
        lang: str,
        ctx: Mapping[str, Any],
        *,
        to: Sequence[str],
        message_id: str,
        date: dt.datetime,
        in_reply_to: str | None = None,
        references: Sequence[str] = (),
        token: str | None = None,
        actions: Sequence[str] = (),
        auto_submitted: str = "auto-replied",
    ) -> Email:
        """Render {lang}/{kind}.txt.j2 and .html.j2 into one multipart/alternative message; with a
        token and the keywords it allows (`actions`), one one-click answer per keyword."""
        if kind not in KINDS:
            raise ValueError(f"unknown email kind {kind!r}")
        _check_lang(lang)
        if auto_submitted not in AUTO_SUBMITTED:
            raise ValueError(f"auto_submitted must be one of {AUTO_SUBMITTED}")
        if date.tzinfo is None:
            raise ValueError("date must be timezone-aware")
        if isinstance(to, str):
            raise ValueError("to must be a sequence of addresses, not one string")
        recipients = tuple(bare_address(address) for address in to)
        if not recipients:
            raise ValueError("an email needs at least one recipient")
        own_id = _own_message_id(message_id)
        subject, text, html = self._render(kind, lang, ctx, token, actions)
        parent = _thread_ids([in_reply_to] if in_reply_to else [])[:1]
        thread = _trimmed(_thread_ids([*references, *parent]))

        pol = _SMTP if all(a.isascii() for a in recipients) else _SMTPUTF8
        fields = [
            self._from_field[pol.utf8],
            _header("To", ", ".join(recipients), pol, _PLAIN_ADDRESSES),
            f"Subject: {_folded_subject(subject)}\r\n",     # one_line() already ran on it
            _header("Date", format_datetime(date), pol, _PLAIN_DATE),
            f"Message-ID: <{own_id}>\r\n",
        ]
        if parent:
            fields.append(f"In-Reply-To: {_folded_ids('In-Reply-To', parent)}\r\n")
        if thread:
            fields.append(f"References: {_folded_ids('References', thread)}\r\n")
        fields.append(_header("Reply-To", self.reply_address(token), pol, _PLAIN_ADDRESSES))
        fields.append(f"Auto-Submitted: {auto_submitted}\r\n")
        fields.append("X-Auto-Response-Suppress: All\r\n")     # keeps Exchange from answering us
        head = "".join(fields).encode("utf-8" if pol.utf8 else "ascii")
        return Email(to=recipients, subject=subject, message_id=own_id, raw=_alternative(head, text, html, lang))

    def one_click(self, token: str, ref: str | None, actions: Sequence[str], lang: str) -> list[OneClick]:
        """A prepared reply per keyword (DESIGN §3): mailto: the token's reply address, the keyword as
        subject and first line, the Ref/Code line below it. No HTTP links: mail scanners open those."""
        address = self.reply_address(token)
        code = f"Ref: {ref} · Code: {token}" if ref else f"Code: {token}"
        links = []
        for keyword in actions:
            word = spelling(Keyword(keyword), lang)
            subject = f"{word} [{ref}]" if ref else word
            query = urllib.parse.urlencode({"subject": subject, "body": f"{word}\r\n\r\n{code}\r\n"},
                                           quote_via=urllib.parse.quote)
            links.append(OneClick(keyword, word, address, subject, f"mailto:{address}?{query}"))
        return links

    def _render(
        self, kind: str, lang: str, ctx: Mapping[str, Any], token: str | None, actions: Sequence[str] = ()
    ) -> tuple[str, str, str]:
        """(subject, text, html): the subject is a top-level `{% set subject %}` of the text template."""
        ref = ctx.get("ref")
        values = {
            **ctx,
            "lang": lang,
            "ref": ref,
            "token": token,
            "from_addr": self.from_addr,
            "reply_address": self.reply_address(token),
            "decisions": self.one_click(token, ref, actions, lang) if token else [],
        }
        text_name = f"{lang}/{kind}.txt.j2"
        module = self._env.get_template(text_name).make_module(values)
        subject = one_line(str(getattr(module, "subject", "")))
        if not subject:
            raise jinja2.TemplateRuntimeError(f"{text_name} sets no subject")
        if len(subject) > _MAX_SUBJECT:
            subject = subject[: _MAX_SUBJECT - 1].rstrip() + "…"
        if ref and f"[{ref}]" not in subject:
            raise jinja2.TemplateRuntimeError(f"{text_name}: the subject must carry [{ref}]")
        html = self._env.get_template(f"{lang}/{kind}.html.j2").render(values, subject=subject)
        return subject, str(module), html
