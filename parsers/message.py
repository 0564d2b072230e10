"""Raw bytes -> ParsedMessage, with mail-parser. Never raises on bad input (DESIGN §4).

The message is parsed once (mail-parser over the stdlib compat32 tree), its headers
indexed once and its MIME tree walked once, with bounds. What that yields, as plain
strings, goes to `parsers.automatic` (auto-reply and bounce signals) and
`parsers.html_text` (HTML-only bodies), which never see bytes or MIME.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import datetime as dt
import email
import email.errors
import email.header
import email.message
import email.parser
import email.utils
import hashlib
import logging
import quopri
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import idna
import mailparser

from parsers.automatic import MailFacts, auto_marks, bounce_marks, bounce_status, bounced_message_ids, dedupe
from parsers.html_text import html_to_text

__all__ = ["ParsedMessage", "ascii_domain", "html_to_text", "parse_message"]

_MAILPARSER_LOG = logging.getLogger("mailparser")   # the parent of all its loggers ("mailparser.core")

MAX_TEXT = 1_000_000          # characters of body text kept (bounds later regex work)
MAX_ATTACHMENT_TEXT = 1_000_000  # characters of attached .txt files kept, all files together
MAX_PARTS = 1_000             # MIME parts inspected for classification
MAX_ADDRESS_HEADER = 20_000  # characters of one address header given to the parser
MAX_IDS = 50                  # Message-IDs kept per header
# Header fields are cut before any parser sees them, where the stdlib's cost is quadratic:
MAX_ENCODED_WORDS = 100       # "=?" per header field (email.header.decode_header: list.pop(0) per word)
MAX_MIME_FIELD = 8_000        # bytes of a Content-Type/-Disposition field, anywhere in the message
MAX_MIME_PARAMS = 64          # ";" in one (email.message._parseparam re-counts quotes and copies per ";")


@dataclass(frozen=True)
class ParsedMessage:
    message_id: str | None            # without angle brackets; None when missing or empty
    sender: str | None                # bare address from From, lower-cased; None when missing/unparseable
    sender_name: str                  # display name from From ("" when none)
    reply_to: str | None              # bare address from Reply-To, lower-cased
    recipients: tuple[str, ...]       # bare lower-cased addresses: To, Cc, Delivered-To, X-Original-To
    subject: str                      # decoded, whitespace collapsed, no CR/LF
    date: dt.datetime | None          # aware UTC, or None
    in_reply_to: tuple[str, ...]      # Message-IDs without brackets
    references: tuple[str, ...]       # Message-IDs without brackets, in header order
    text: str                         # text/plain, else the HTML part turned into text, else an attached .txt
    text_source: str                  # "plain" | "html" | "attachment" | "none"
    return_path: str | None           # "" for the null return path <>, None when the header is absent
    auto_marks: tuple[str, ...]       # why it looks automatic, e.g. "auto-submitted:auto-replied"
    bounce_marks: tuple[str, ...]     # why it looks like a bounce/DSN, e.g. "content-type:multipart/report"
    bounce_status: str | None         # the worst DSN Status (e.g. "5.1.1") when a bounce says one
    bounced_message_ids: tuple[str, ...]  # Message-IDs of the original email a bounce returns
    authentication_results: tuple[str, ...]  # raw Authentication-Results header values
    from_count: int                   # addresses in every From header together: exactly one may act (DESIGN §3)
    content_hash: str                 # sha256 hex of the raw bytes
    size: int                         # len(raw)
    defects: tuple[str, ...] = field(default=())  # parse problems worth a log line
    # Every attached .txt file, blank-line separated, even when `text` comes from the body:
    # partners write "see attached form" and attach form.txt (DESIGN §2).
    attachment_text: str = ""

    @property
    def is_automatic(self) -> bool:
        return bool(self.auto_marks or self.bounce_marks)

    @property
    def is_bounce(self) -> bool:
        return bool(self.bounce_marks)


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse one message; any input, however broken, yields a ParsedMessage."""
    raw = bytes(raw)
    defects: list[str] = []
    # A UTF-8 byte-order mark (Windows tools add one) would turn every header into body.
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    msg, plains, htmls = _parse_tree(_bounded_fields(body, defects), defects)
    hdr = _Headers(msg)
    parts = _Parts(msg, defects)

    text, source = _choose_text(plains, htmls, parts.attachments[0] if parts.attachments else "")
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT]
        defects.append("text truncated")
    attachment_text = "\n\n".join(parts.attachments)
    if len(attachment_text) > MAX_ATTACHMENT_TEXT or parts.attachments_dropped:
        attachment_text = attachment_text[:MAX_ATTACHMENT_TEXT]
        defects.append("attachment text truncated")

    from_name, from_addr = _first_address(hdr.raw("from"))
    reply_to = _first_address(hdr.raw("reply-to"))[1]
    subject = _collapse(hdr.text("subject"))
    return_path = _return_path(hdr.raw("return-path"))
    facts = MailFacts(
        headers=hdr.index,
        subject=subject,
        sender=from_addr,
        sender_name=from_name,
        from_raw=_collapse(hdr.text("from")).lower(),
        sender_header=_first_address(hdr.raw("sender"))[1],
        reply_to=reply_to,
        return_path=return_path,
        part_types=frozenset(parts.types),
        report_types=frozenset(parts.report_types),
        dsn_texts=tuple(parts.dsn_texts),
        returned_ids=tuple(parts.returned_ids),
        returned_headers=tuple(parts.returned_headers),
        text=text,
    )
    bounce = bounce_marks(facts)

    return ParsedMessage(
        message_id=_first(_ids(hdr.raw("message-id"), loose=True)),
        sender=from_addr,
        sender_name=from_name,
        reply_to=reply_to,
        recipients=_recipients(hdr),
        subject=subject,
        date=_date(hdr.raw("date")),
        in_reply_to=_ids(hdr.raw("in-reply-to"), loose=True),
        references=_ids(" ".join(hdr.all_raw("references"))),
        text=text,
        text_source=source,
        return_path=return_path,
        auto_marks=auto_marks(facts),
        bounce_marks=bounce,
        bounce_status=bounce_status(facts) if bounce else None,
        bounced_message_ids=bounced_message_ids(facts) if bounce else (),
        authentication_results=tuple(_unfold(v) for v in hdr.all_raw("authentication-results")),
        from_count=_address_count(hdr.all_raw("from")),
        content_hash=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        defects=tuple(dedupe(defects)),
        attachment_text=attachment_text,
    )


# --------------------------------------------------------------------------- field limits

_FIELD = re.compile(rb"[^\n]*(?:\n[ \t][^\n]*)*")           # a line and its continuation lines
_MIME_FIELD = re.compile(rb"^content-(?:type|disposition)[ \t]*:", re.IGNORECASE | re.MULTILINE)
_BLANK_LINE = re.compile(rb"\n\r?\n")
# The start of a field long enough to hold more than MAX_ENCODED_WORDS encoded words; shorter
# fields (nearly all) never reach Python code.
_LONG_FIELD = re.compile(rb"^(?![ \t])(?:[^\n]|\n[ \t]){%d}" % (2 * MAX_ENCODED_WORDS), re.MULTILINE)


def _nth(raw: bytes, needle: bytes, n: int, start: int, end: int) -> int:
    """Index of the n-th `needle` in raw[start:end], or -1 when there are fewer."""
    at = start - 1
    for _ in range(n):
        at = raw.find(needle, at + 1, end)
        if at < 0:
            return -1
    return at


def _bounded_fields(raw: bytes, defects: list[str]) -> bytes:
    """The message with over-long header fields cut (STYLE "Bounded by construction"), in one linear pass.

    Which lines are part headers is known only after parsing, so every line that starts a
    Content-Type or Content-Disposition field is treated as one; encoded words are decoded
    from the top-level header block only. A field of real mail is far inside these limits.
    """
    cuts: list[tuple[int, int]] = []                    # byte ranges [start, end) to drop
    blank = _BLANK_LINE.search(raw)
    head_end = blank.start() if blank else len(raw)
    if raw.count(b"=?", 0, head_end) > MAX_ENCODED_WORDS:
        for found in _LONG_FIELD.finditer(raw, 0, head_end):
            field = _FIELD.match(raw, found.start())
            end = field.end() if field else head_end
            cut = _nth(raw, b"=?", MAX_ENCODED_WORDS + 1, found.start(), end)
            if cut >= 0:
                cuts.append((cut, end))
    for mime in _MIME_FIELD.finditer(raw):
        start = mime.start()
        field = _FIELD.match(raw, start)
        end = field.end() if field else start
        limit = min(end, start + MAX_MIME_FIELD)
        for needle, count in ((b";", MAX_MIME_PARAMS), (b"=?", MAX_ENCODED_WORDS)):
            cut = _nth(raw, needle, count + 1, start, limit)
            limit = cut if cut >= 0 else limit
        if limit < end:
            cuts.append((limit, end))
    if not cuts:
        return raw
    defects.append("header field cut")
    out: list[bytes] = []
    kept = 0
    for start, end in sorted(cuts):
        if end > kept:
            out.append(raw[kept:max(start, kept)])
            kept = end
    out.append(raw[kept:])
    return b"".join(out)


# --------------------------------------------------------------------------- tree

@contextlib.contextmanager
def _only_errors_from_mailparser() -> Iterator[None]:
    """mail-parser logs a WARNING ("Email content 'rfc822-headers' not handled") for ordinary
    mail. Our log is one structured line per event (DESIGN §7), so while it parses only its
    errors pass; its level is put back after, so importing this module changes no one's logging."""
    before = _MAILPARSER_LOG.level
    _MAILPARSER_LOG.setLevel(max(before, logging.ERROR))
    try:
        yield
    finally:
        _MAILPARSER_LOG.setLevel(before)


def _parse_tree(raw: bytes, defects: list[str]) -> tuple[email.message.Message, list[str], list[str]]:
    """mail-parser first; the stdlib, then a headers-only parse, when it fails."""
    try:
        with _only_errors_from_mailparser():
            parsed = mailparser.parse_from_bytes(raw)
            msg = parsed.message
            if msg is None:
                raise ValueError("mail-parser returned no message")
            defects.extend(sorted(parsed.defects_categories))
            plains, htmls = _strings(parsed.text_plain), _strings(parsed.text_html)
        if any("\ufffd" in t for t in (*plains, *htmls)):
            # mail-parser falls back to UTF-8 with replacement; 8-bit text labelled
            # us-ascii is usually cp1252, which our own decoder tries next.
            plains, htmls = _bodies(msg)
        return msg, plains, htmls
    # mail-parser raises many types (its own, RecursionError wrappers, codec and
    # index errors on hostile MIME); the stdlib fallback below covers all of them.
    except Exception as exc:  # noqa: BLE001 - the one sanctioned catch-all (DESIGN §4)
        defects.append(f"mail-parser failed: {type(exc).__name__}")
    try:
        msg = email.message_from_bytes(raw)
        plains, htmls = _bodies(msg)
        return msg, plains, htmls
    except (RecursionError, email.errors.MessageError, LookupError, ValueError,
            TypeError, AttributeError, IndexError) as exc:
        defects.append(f"stdlib parse failed: {type(exc).__name__}")
    msg = email.parser.BytesParser().parsebytes(raw, headersonly=True)
    # The body as bytes, cut by hand: get_payload() would decode with the (hostile) charset again.
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    plain = _decode_bytes(raw[min(ends):].lstrip(b"\r\n"), None) if ends else ""
    return msg, [plain] if plain.strip() else [], []


def _strings(values: object) -> list[str]:
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def _bodies(msg: email.message.Message) -> tuple[list[str], list[str]]:
    """Inline text/plain and text/html parts, for when mail-parser is unavailable."""
    plains: list[str] = []
    htmls: list[str] = []
    for part in _walk(msg):
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html") or _is_attachment(part):
            continue
        text = _part_text(part)
        if text:
            (plains if ctype == "text/plain" else htmls).append(text)
    return plains, htmls


def _walk(msg: email.message.Message) -> Iterator[email.message.Message]:
    """Depth-first walk without recursion, bounded by MAX_PARTS."""
    stack = [msg]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        yield part
        if part.is_multipart():  # never get_payload() on a leaf: it decodes with a hostile charset
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(reversed([p for p in payload if isinstance(p, email.message.Message)]))


def _is_attachment(part: email.message.Message) -> bool:
    disposition = (part.get("content-disposition") or "")
    return str(disposition).strip().lower().startswith("attachment")


def _part_text(part: email.message.Message) -> str:
    return _decode_bytes(_part_bytes(part), _charset(part))


def _part_bytes(part: email.message.Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError, binascii.Error):
        return b""
    return payload if isinstance(payload, bytes) else b""


def _charset(part: email.message.Message) -> str | None:
    try:
        cs = part.get_content_charset()
    except (ValueError, TypeError, LookupError):
        return None
    return cs if isinstance(cs, str) else None


_CHARSET_ALIASES = {
    "unicode-1-1-utf-7": "utf-7", "x-unknown": "", "unknown-8bit": "", "x-user-defined": "",
    "ks_c_5601-1987": "cp949", "iso-2022-jp": "iso2022_jp_ext", "gb2312": "gb18030",
    "gbk": "gb18030", "shift_jis": "cp932", "x-sjis": "cp932", "iso-8859-1": "cp1252",
    "us-ascii": "cp1252", "ascii": "cp1252", "euc-kr": "cp949",
}


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Declared charset if it works, else UTF-8, else cp1252: mislabels are common."""
    name = (charset or "").strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    if name:
        try:
            codecs.lookup(name)
            return data.decode(name)
        except (LookupError, UnicodeError, ValueError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if name:
        try:
            return data.decode(name, "replace")
        except (LookupError, UnicodeError, ValueError):
            pass
    return data.decode("cp1252", "replace")


def _choose_text(plains: list[str], htmls: list[str], attachment: str) -> tuple[str, str]:
    plain = "\n".join(p for p in plains if p.strip())
    if plain.strip():
        return _normalise(plain), "plain"
    markup = "\n".join(htmls)
    if markup.strip():
        converted = html_to_text(markup)      # bounded there: MAX_HTML, MAX_OUTPUT
        if converted.strip():
            return converted, "html"
    if attachment.strip():
        return _normalise(attachment), "attachment"
    return "", "none"


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


# --------------------------------------------------------------------------- headers

class _Headers:
    """Headers indexed once by lower-case name, in order; values 8-bit safe but still folded."""

    def __init__(self, msg: email.message.Message) -> None:
        index: dict[str, list[str]] = {}
        for name, value in msg.raw_items():
            index.setdefault(str(name).strip().lower(), []).append(_raw_header_str(value))
        self.index: Mapping[str, tuple[str, ...]] = {name: tuple(values) for name, values in index.items()}

    def raw(self, name: str) -> str:
        values = self.index.get(name)
        return values[0] if values else ""

    def all_raw(self, name: str) -> tuple[str, ...]:
        return self.index.get(name, ())

    def text(self, name: str) -> str:
        return _decode_words(self.raw(name))


def _raw_header_str(value: object) -> str:
    """8-bit header bytes arrive as surrogate escapes (compat32); decode them leniently."""
    if isinstance(value, email.header.Header):
        value = str(value)
    text = str(value)
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        text = _decode_bytes(text.encode("ascii", "surrogateescape"), None)
    return text


def _decode_words(value: str) -> str:
    """RFC 2047 encoded-words, with unknown charsets and bad base64 tolerated."""
    if "=?" not in value:
        return _unfold(value)
    try:
        chunks = email.header.decode_header(_unfold(value))
    except (email.errors.HeaderParseError, binascii.Error, ValueError, LookupError, IndexError):
        return _unfold(value)
    out: list[str] = []
    for chunk, charset in chunks:
        out.append(_decode_bytes(chunk, charset) if isinstance(chunk, bytes) else chunk)
    return "".join(out)


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]*", " ", value).strip()


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACE = re.compile(r"\s+")


def _collapse(value: str) -> str:
    return _SPACE.sub(" ", _CONTROL.sub(" ", value)).strip()


_ID = re.compile(r"<([^<>\s]{1,998})>")


def _ids(value: str, loose: bool = False) -> tuple[str, ...]:
    """Message-IDs in angle brackets; `loose` also accepts one bare id (common breakage)."""
    found = _ID.findall(value)
    if not found and loose:
        bare = value.strip().strip("<>").strip()
        if bare and " " not in bare:
            found = [bare]
    return tuple(dedupe(found))[:MAX_IDS]


def _first(values: tuple[str, ...]) -> str | None:
    return values[0] if values else None


# One addr-spec and nothing else: what we can safely write into a To header (no names, lists, CR/LF).
_BARE_ADDRESS = re.compile(r'[^\s\x00-\x1f\x7f<>(),;:@"\[\]\\]+@[^\s\x00-\x1f\x7f<>(),;:@"\[\]\\]+')


def _usable_address(addr: str) -> bool:
    """One bare addr-spec whose domain survives IDNA: an address we could write to."""
    if not _BARE_ADDRESS.fullmatch(addr):
        return False
    domain = addr.rpartition("@")[2]
    if domain.isascii():
        return True
    try:
        idna.encode(domain, uts46=True)
    except idna.IDNAError:
        return False
    return True


def ascii_domain(domain: str) -> str:
    """Lower-case A-label form, so "Bücher.example" and "xn--bcher-kva.example" compare equal."""
    domain = domain.strip().rstrip(".").lower()
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return domain


def _addresses(value: str) -> list[tuple[str, str]]:
    if not value:
        return []
    try:
        # The stdlib address parser recurses on group syntax; cap the input it sees.
        pairs = email.utils.getaddresses([value[:MAX_ADDRESS_HEADER]])
    except (RecursionError, ValueError, TypeError, IndexError, email.errors.HeaderParseError):
        return []
    out = []
    for name, addr in pairs:
        addr = addr.strip().strip("<>").lower()
        out.append((_collapse(_decode_words(name)), addr if _usable_address(addr) else ""))
    return out


def _first_address(value: str) -> tuple[str, str | None]:
    pairs = _addresses(value)
    for name, addr in pairs:
        if addr:
            return name, addr
    return (pairs[0][0] if pairs else _collapse(_decode_words(value)) if value and "@" not in value else ""), None


def _address_count(values: tuple[str, ...]) -> int:
    """How many addresses the From headers name, usable or not: `a@x, b@y` is two senders."""
    count = 0
    for value in values:
        try:
            pairs = email.utils.getaddresses([value[:MAX_ADDRESS_HEADER]])
        except (RecursionError, ValueError, TypeError, IndexError, email.errors.HeaderParseError):
            return 2   # unparseable: not one clear sender
        count += sum(1 for _, addr in pairs if "@" in addr)
    return count


def _recipients(hdr: _Headers) -> tuple[str, ...]:
    found: list[str] = []
    for name in ("to", "cc", "delivered-to", "x-original-to"):
        for value in hdr.all_raw(name):
            found.extend(addr for _, addr in _addresses(value) if addr)
    return tuple(dedupe(found))[:200]


def _return_path(value: str) -> str | None:
    if not value and value is not None:
        return None
    stripped = _unfold(value)
    if stripped in ("", "<>", "<<>>"):
        return ""
    match = re.search(r"<([^<>]*)>", stripped)
    addr = (match.group(1) if match else stripped.split()[0]).strip().lower()
    return addr


def _date(value: str) -> dt.datetime | None:
    if not value.strip():
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    try:
        return parsed.astimezone(dt.timezone.utc)
    except (OverflowError, ValueError):
        return None


# --------------------------------------------------------------------------- MIME facts

class _Parts:
    """What classification and `attachment_text` need from the MIME tree, in one bounded walk."""

    def __init__(self, msg: email.message.Message, defects: list[str]) -> None:
        self.types: set[str] = set()
        self.report_types: set[str] = set()
        self.dsn_texts: list[str] = []
        self.returned_ids: list[str] = []
        self.returned_headers: list[str] = []
        self.attachments: list[str] = []     # attached .txt files, decoded and normalised, in MIME order
        self.attachments_dropped = False     # one was left out: MAX_ATTACHMENT_TEXT already reached
        kept = 0
        count = 0
        for part in _walk(msg):
            count += 1
            try:
                kept = self._take(part, kept)
            except (ValueError, LookupError, TypeError, UnicodeError) as exc:
                # A hostile charset or encoding on one part (a NUL in charset=, say) spoils that part only.
                defects.append(f"unreadable MIME part: {type(exc).__name__}")
        if count >= MAX_PARTS:
            defects.append("too many MIME parts; rest ignored")

    def _take(self, part: email.message.Message, kept: int) -> int:
        """Note what one part tells; returns the attachment text kept so far."""
        ctype = part.get_content_type()
        self.types.add(ctype)
        if ctype == "multipart/report":
            self.report_types.add(str(part.get_param("report-type") or "").lower())
        elif ctype in ("message/delivery-status", "message/global-delivery-status"):
            self.dsn_texts.append(_dsn_text(part))
        elif ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                self.returned_ids.extend(_ids(_raw_header_str(inner[0].get("message-id", "")), loose=True))
        elif ctype in ("text/rfc822-headers", "message/rfc822-headers"):
            self.returned_headers.append(_part_text(part))
        elif _is_txt_attachment(part, ctype):
            if kept >= MAX_ATTACHMENT_TEXT:
                self.attachments_dropped = True
                return kept
            text = _normalise(_file_text(part))
            if text:
                self.attachments.append(text)
                kept += len(text)
        return kept


def _is_txt_attachment(part: email.message.Message, ctype: str) -> bool:
    """A file named *.txt, or an unnamed text/plain attachment. A named non-.txt file is not
    one even as text/plain: a broken Content-Type makes a JPEG text/plain by default."""
    if ctype.startswith("multipart/") or ctype.startswith("message/"):
        return False
    try:
        filename = str(part.get_filename() or "").strip().lower()
    except (ValueError, TypeError, LookupError):
        filename = ""
    return filename.endswith(".txt") or (ctype == "text/plain" and _is_attachment(part) and "." not in filename)


_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _file_text(part: email.message.Message) -> str:
    """Like a body part, but a byte-order mark wins over the charset: Notepad writes one, and
    its "Unicode" files are UTF-16, which mail clients attach with no or a wrong charset."""
    data = _part_bytes(part)
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data.decode(codec, "replace")
    return _decode_bytes(data, _charset(part))


def _dsn_text(part: email.message.Message) -> str:
    """A delivery-status part as "Name: value" text. The stdlib splits it into field blocks but
    never undoes a transfer encoding: RFC 6533 allows one on the part, and some gateways
    base64 a block behind a Content-Transfer-Encoding field (mimekit__bounce.eml)."""
    encoding = _transfer_encoding(part)
    payload = part.get_payload()
    if isinstance(payload, str):
        return _undo_transfer_encoding(payload, encoding)
    chunks: list[str] = []
    for block in payload if isinstance(payload, list) else []:
        if not isinstance(block, email.message.Message):
            continue
        lines = [f"{name}: {_raw_header_str(value)}" for name, value in block.raw_items()]
        encoding = _transfer_encoding(block) or encoding
        body = block.get_payload()
        if isinstance(body, str) and body.strip():
            lines.append(_undo_transfer_encoding(body, encoding))
        chunks.append("\n".join(lines))
    return "\n\n".join(chunks)


def _transfer_encoding(part: email.message.Message) -> str:
    return str(part.get("content-transfer-encoding") or "").strip().lower()


def _undo_transfer_encoding(text: str, encoding: str) -> str:
    """base64 or quoted-printable text decoded; any other (or undecodable) text as it is."""
    if encoding not in ("base64", "quoted-printable"):
        return text
    data = text.encode("ascii", "surrogateescape")
    if encoding == "quoted-printable":
        return _decode_bytes(quopri.decodestring(data), None)
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    try:
        return _decode_bytes(base64.b64decode(data + b"=" * (-len(data) % 4)), None)
    except (binascii.Error, ValueError):
        return text
