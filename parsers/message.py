"""Raw bytes -> ParsedMessage, with mail-parser. Never raises on bad input (DESIGN §4).

The message is parsed once (mail-parser over the stdlib compat32 tree); headers
are indexed once and every later look-up reads that index. Classification
(auto-reply, bounce) lives in `parsers.message` too because it needs the MIME
tree, which is not kept in ParsedMessage.
"""

from __future__ import annotations

import binascii
import codecs
import datetime as dt
import email
import email.errors
import email.header
import email.message
import email.parser
import email.utils
import hashlib
import html
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

import mailparser

MAX_TEXT = 1_000_000          # characters of body text kept (bounds later regex work)
MAX_PARTS = 1_000             # MIME parts inspected for classification
MAX_HTML = 4_000_000          # characters of HTML fed to the converter
MAX_ADDRESS_HEADER = 20_000  # characters of one address header given to the parser
MAX_IDS = 50                  # Message-IDs kept per header


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
    content_hash: str                 # sha256 hex of the raw bytes
    size: int                         # len(raw)
    defects: tuple[str, ...] = field(default=())  # parse problems worth a log line

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
    msg, plains, htmls = _parse_tree(body, defects)
    hdr = _Headers(msg)
    parts = _Parts(msg, defects)

    text, source = _choose_text(plains, htmls, parts.txt_attachment)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT]
        defects.append("text truncated")

    from_name, from_addr = _first_address(hdr.raw("from"))
    subject = _collapse(hdr.text("subject"))
    return_path = _return_path(hdr.raw("return-path"))
    facts = _Facts(
        hdr=hdr,
        parts=parts,
        subject=subject,
        sender=from_addr,
        sender_name=from_name,
        from_raw=_collapse(hdr.text("from")).lower(),
        return_path=return_path,
        has_from="from" in hdr,
    )
    auto = _auto_marks(facts)
    bounce = _bounce_marks(facts)
    status: str | None = None
    bounced: tuple[str, ...] = ()
    if bounce:
        status = parts.worst_status or _legacy_status(text)
        bounced = tuple(_dedupe([*parts.original_ids, *_ids(hdr.raw("original-message-id")),
                           *_ids(hdr.raw("x-original-message-id")), *_legacy_original_ids(text)]))[:MAX_IDS]

    return ParsedMessage(
        message_id=_first(_ids(hdr.raw("message-id"), loose=True)),
        sender=from_addr,
        sender_name=from_name,
        reply_to=_first_address(hdr.raw("reply-to"))[1],
        recipients=_recipients(hdr),
        subject=subject,
        date=_date(hdr.raw("date")),
        in_reply_to=_ids(hdr.raw("in-reply-to"), loose=True),
        references=_ids(" ".join(hdr.all_raw("references"))),
        text=text,
        text_source=source,
        return_path=return_path,
        auto_marks=auto,
        bounce_marks=bounce,
        bounce_status=status,
        bounced_message_ids=bounced,
        authentication_results=tuple(_unfold(v) for v in hdr.all_raw("authentication-results")),
        content_hash=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        defects=tuple(_dedupe(defects)),
    )


# --------------------------------------------------------------------------- tree

def _parse_tree(raw: bytes, defects: list[str]) -> tuple[email.message.Message, list[str], list[str]]:
    """mail-parser first; the stdlib, then a headers-only parse, when it fails."""
    try:
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
    body = msg.get_payload()
    plain = _decode_bytes(body.encode("ascii", "surrogateescape"), None) if isinstance(body, str) else ""
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
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, email.message.Message)]))


def _is_attachment(part: email.message.Message) -> bool:
    disposition = (part.get("content-disposition") or "")
    return str(disposition).strip().lower().startswith("attachment")


def _part_text(part: email.message.Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError, binascii.Error):
        return ""
    if not isinstance(payload, bytes):
        return ""
    return _decode_bytes(payload, _charset(part))


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
        converted = html_to_text(markup[:MAX_HTML])
        if converted.strip():
            return converted, "html"
    if attachment.strip():
        return _normalise(attachment), "attachment"
    return "", "none"


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


# --------------------------------------------------------------------------- headers

class _Headers:
    """Headers indexed once by lower-case name; values unfolded and 8-bit safe."""

    def __init__(self, msg: email.message.Message) -> None:
        index: dict[str, list[str]] = {}
        for name, value in msg.raw_items():
            index.setdefault(str(name).strip().lower(), []).append(_raw_header_str(value))
        self._index = index

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def names(self) -> Iterable[str]:
        return self._index.keys()

    def raw(self, name: str) -> str:
        values = self._index.get(name)
        return values[0] if values else ""

    def all_raw(self, name: str) -> list[str]:
        return self._index.get(name, [])

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
    return tuple(_dedupe(found))[:MAX_IDS]


def _first(values: tuple[str, ...]) -> str | None:
    return values[0] if values else None


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
        out.append((_collapse(_decode_words(name)), addr if "@" in addr else ""))
    return out


def _first_address(value: str) -> tuple[str, str | None]:
    pairs = _addresses(value)
    for name, addr in pairs:
        if addr:
            return name, addr
    return (pairs[0][0] if pairs else _collapse(_decode_words(value)) if value and "@" not in value else ""), None


def _recipients(hdr: _Headers) -> tuple[str, ...]:
    found: list[str] = []
    for name in ("to", "cc", "delivered-to", "x-original-to"):
        for value in hdr.all_raw(name):
            found.extend(addr for _, addr in _addresses(value) if addr)
    return tuple(_dedupe(found))[:200]


def _return_path(value: str) -> str | None:
    if not value and value is not None:
        return None
    stripped = value.strip()
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


def _dedupe(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        if v and v not in seen:
            seen[v] = None
    return list(seen)


# --------------------------------------------------------------------------- MIME facts

class _Parts:
    """What classification needs from the MIME tree, gathered in one bounded walk."""

    def __init__(self, msg: email.message.Message, defects: list[str]) -> None:
        self.types: set[str] = set()
        self.report_types: set[str] = set()
        self.statuses: list[str] = []
        self.original_ids: list[str] = []
        self.txt_attachment = ""
        count = 0
        for part in _walk(msg):
            count += 1
            ctype = part.get_content_type()
            self.types.add(ctype)
            if ctype == "multipart/report":
                self.report_types.add(str(part.get_param("report-type") or "").lower())
            elif ctype in ("message/delivery-status", "message/global-delivery-status"):
                self._read_dsn(part)
            elif ctype in ("message/rfc822", "message/global"):
                inner = part.get_payload()
                if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                    self.original_ids.extend(_ids(_raw_header_str(inner[0].get("message-id", "")), loose=True))
            elif ctype in ("text/rfc822-headers", "message/rfc822-headers"):
                self.original_ids.extend(_legacy_original_ids(_part_text(part)))
            elif not self.txt_attachment and _is_txt_attachment(part, ctype):
                self.txt_attachment = _part_text(part)
        if count >= MAX_PARTS:
            defects.append("too many MIME parts; rest ignored")

    def _read_dsn(self, part: email.message.Message) -> None:
        payload = part.get_payload()
        blocks = payload if isinstance(payload, list) else []
        texts = [_raw_header_str(v) for b in blocks if isinstance(b, email.message.Message)
                 for v in b.get_all("status", [])]
        for b in blocks:
            if isinstance(b, email.message.Message):
                for name in ("original-message-id", "x-original-message-id"):
                    self.original_ids.extend(_ids(_raw_header_str(b.get(name, ""))))
        if isinstance(payload, str):
            texts.extend(re.findall(r"(?im)^status:\s*(\S+)", payload))
        self.statuses.extend(m.group(0) for t in texts if (m := _STATUS.search(t)))

    @property
    def worst_status(self) -> str | None:
        return _worst(self.statuses)


_STATUS = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")


def _worst(statuses: list[str]) -> str | None:
    """RFC 3463: class 5 (permanent) beats 4 (transient) beats 2; first wins a tie."""
    best: str | None = None
    for status in statuses:
        if best is None or status[0] > best[0]:
            best = status
    return best


def _is_txt_attachment(part: email.message.Message, ctype: str) -> bool:
    if ctype.startswith("multipart/") or ctype.startswith("message/"):
        return False
    try:
        filename = part.get_filename() or ""
    except (ValueError, TypeError, LookupError):
        filename = ""
    return str(filename).lower().endswith(".txt") or (ctype == "text/plain" and _is_attachment(part))


_LEGACY_STATUS = re.compile(r"(?im)(?:^\s*status:\s*|\b[45]\d\d[ -]#?)([45]\.\d{1,3}\.\d{1,3})\b")
_LEGACY_ID = re.compile(r"(?im)^[ \t>]*(?:original-)?message-id:\s*<([^<>\s]+)>")


def _legacy_status(text: str) -> str | None:
    """Text-only bounces (qmail, Exim, Exchange NDR) often still name an enhanced status code."""
    return _worst([m.group(1) for m in _LEGACY_STATUS.finditer(text[:200_000])])


def _legacy_original_ids(text: str) -> list[str]:
    return _LEGACY_ID.findall(text[:500_000])[:MAX_IDS]


# --------------------------------------------------------------------------- classification

@dataclass(frozen=True)
class _Facts:
    hdr: _Headers
    parts: _Parts
    subject: str
    sender: str | None
    sender_name: str
    from_raw: str
    return_path: str | None
    has_from: bool


_PRECEDENCE = {"bulk", "junk", "list", "auto_reply", "auto-reply"}
# Present at all -> machine-made. RFC 3834 §3.1.5 and the vendor headers autoresponders,
# ticket systems, list managers and ESPs add; X-Auto-Response-Suppress is NOT here
# (Exchange puts it on human replies).
_AUTO_HEADERS = (
    "x-autoreply", "x-autorespond", "x-auto-reply", "x-autoreply-from", "x-mail-autoreply",
    "x-loop", "x-ms-exchange-inbox-rules-loop", "x-ms-exchange-generated-message-source",
    "x-autogenerated", "x-auto-generated", "x-jira-fingerprint", "x-bugzilla-reason",
    "x-bugzilla-type", "x-servicenow-generated", "x-github-reason", "x-gitlab-project",
    "x-redmine-project", "x-bluebottle-request", "x-boxtrapper", "x-mailman-version",
    "x-beenthere", "x-mailing-list", "mailing-list", "list-id", "list-unsubscribe",
    "list-post", "x-campaign", "x-campaignid", "x-mc-user", "x-csa-complaints",
    "x-rt-loop-prevention", "x-otrs-loop", "x-zammad-loop", "x-report-abuse",
)
_NOREPLY = re.compile(r"(?:^|[-_.+])(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|noreply)(?:[-_.+]|$)")
_LIST_ROLE = re.compile(r"(?:^owner-|[-+](?:owner|request|bounces?)(?:[-+].*)?$)")
_SYSTEM = {"daemon", "nobody", "cron", "www-data", "apache", "oracle", "nagios", "zabbix",
           "jenkins", "logwatch", "anacron", "bounce", "bounces"}
_SCRIPT_MAILER = re.compile(r"libwww-perl|mime::lite|swift ?mailer|phpmailer|python-requests", re.I)
_OOO_SUBJECT = re.compile(
    r"out of (?:the )?office|\bautomatic reply\b|\bauto[- ]?repl(?:y|ied)\b|\bauto[- ]?respon(?:se|der)\b"
    r"|\bautomatische antwort\b|abwesenheitsnotiz|\babwesenheit\b|r[ée]ponse automatique"
    r"|\bautomatyczna odpowied[zź]|respuesta autom[aá]tica|risposta automatica|resposta autom[aá]tica"
    r"|automatisch antwoord|\bautosvar\b|^\s*auto:|\(automatic response\)|\[auto generated\]"
    r"|^\s*vacation\b|\bvacation (?:alert|reply|notice|message|response)\b|\bon vacation\b"
    r"|away from (?:my|the) (?:mail|e-?mail|office|desk)"
    r"|^\s*complaint about message from|email feedback report|^\s*read:\s|^\s*gelesen:\s"
    r"|^\s*lesebest[äa]tigung|^\s*return receipt\b",
    re.IGNORECASE,
)
_RT_ID = re.compile(r"<rt-\d+\.\d+\.\d+-", re.IGNORECASE)   # Request Tracker's own notifications
_REPLY_PREFIX = re.compile(r"^\s*(?:re|aw|sv|wg|fw|fwd|tr|r|i)\s*(?:\[\d+\])?\s*:", re.IGNORECASE)
_TRANSACTIONAL_SUBJECT = re.compile(
    r"\breceipt for your (?:payment|order|purchase)\b|\byour (?:order|payment) confirmation\b"
    r"|\bihre rechnung\b|\bnewsletter\b|\[jira\]",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered mail|returned mail|returned to sender|delivery status notification"
    r"|delivery (?:has )?failed|delivery failure|mail delivery failed|failure notice"
    r"|nondeliverable|non-delivery|unzustellbar|nicht zustellbar|delivery notification"
    r"|could not be delivered|warning: could not send|mail system error|delayed mail"
    r"|message not delivered|niedostarczon|non recapitabile|no se pudo entregar",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"mailer-daemon|mail delivery (?:subsystem|system)|\bpostmaster\b", re.IGNORECASE)


def _local(addr: str | None) -> str:
    return addr.rsplit("@", 1)[0] if addr and "@" in addr else (addr or "")


def _auto_marks(f: _Facts) -> tuple[str, ...]:
    marks: list[str] = []
    hdr = f.hdr
    for value in hdr.all_raw("auto-submitted"):
        token = re.split(r"[\s;(]", value.strip().lower(), maxsplit=1)[0]
        if token and token != "no":
            marks.append(f"auto-submitted:{token}")
    for name in ("precedence", "x-precedence"):
        for value in hdr.all_raw(name):
            token = value.strip().lower()
            if token in _PRECEDENCE:
                marks.append(f"{name}:{token}")
    marks.extend(f"header:{name}" for name in _AUTO_HEADERS
                 if name in hdr and not _is_no(hdr.raw(name)))
    if hdr.raw("x-antispameurope-detected-infomail").strip().lower() == "yes":
        marks.append("header:x-antispameurope-detected-infomail")
    if f.return_path == "":
        marks.append("return-path:null")
    roles = {"from": f.sender, "sender": _first_address(hdr.raw("sender"))[1],
             "reply-to": _first_address(hdr.raw("reply-to"))[1], "return-path": f.return_path}
    for role, addr in roles.items():
        local = _local(addr)
        if _NOREPLY.search(local):
            marks.append(f"{role}:noreply")
        if _LIST_ROLE.search(local):
            marks.append(f"{role}:list-role")
        if local in _SYSTEM:
            marks.append(f"{role}:system")
    if _NOREPLY.search(f.from_raw):
        marks.append("from:noreply")
    if re.search(r"\bnewsletter\b", f.sender_name, re.IGNORECASE):
        marks.append("from:newsletter")
    if f.sender_name.lower().endswith(" via rt") or _RT_ID.match(hdr.raw("message-id").strip()):
        marks.append("from:rt")
    if "feedback-id" in hdr and not hdr.raw("in-reply-to") and not hdr.raw("references"):
        # ESPs (SES, Mailchimp) stamp Feedback-ID on bulk and transactional mail; a
        # person's reply to us always carries In-Reply-To/References, so only those pass.
        marks.append("header:feedback-id")
    mailer = " ".join(hdr.all_raw("x-mailer") + hdr.all_raw("user-agent"))
    if _SCRIPT_MAILER.search(mailer):
        marks.append("x-mailer:script")
    parts = f.parts
    if parts.report_types & {"disposition-notification", "feedback-report"} or (
        parts.types & {"message/disposition-notification", "message/feedback-report"}
    ):
        marks.append("content-type:multipart/report")
    if _OOO_SUBJECT.search(f.subject):
        marks.append("subject:auto-reply")
    if not _REPLY_PREFIX.match(f.subject) and _TRANSACTIONAL_SUBJECT.search(f.subject):
        marks.append("subject:notification")
    return tuple(_dedupe(marks))


def _is_no(value: str) -> bool:
    return value.strip().lower() in ("no", "false", "0")


def _bounce_marks(f: _Facts) -> tuple[str, ...]:
    marks: list[str] = []
    parts = f.parts
    if "delivery-status" in parts.report_types or "global-delivery-status" in parts.report_types:
        marks.append("content-type:multipart/report;delivery-status")
    if parts.types & {"message/delivery-status", "message/global-delivery-status"}:
        marks.append("part:message/delivery-status")
    if "x-failed-recipients" in f.hdr:
        marks.append("header:x-failed-recipients")
    if "x-ms-exchange-message-is-ndr" in f.hdr:
        marks.append("header:x-ms-exchange-message-is-ndr")
    local = _local(f.sender).lower()
    daemon_from = local in ("mailer-daemon", "mailer_daemon", "mail-daemon") or (
        f.sender is None and "mailer-daemon" in f.from_raw)
    if daemon_from:
        marks.append("from:mailer-daemon")
    bounce_subject = bool(_BOUNCE_SUBJECT.search(f.subject)) and not _REPLY_PREFIX.match(f.subject)
    if bounce_subject:
        corroborated = (
            f.return_path == "" or bool(marks) or not f.has_from
            or _DAEMON.search(f.from_raw) is not None or "multipart/report" in parts.types
            or "auto-submitted" in f.hdr
        )
        if corroborated:
            marks.append("subject:bounce")
    if local == "postmaster" and (marks or "multipart/report" in parts.types):
        marks.append("from:postmaster")
    if "multipart/report" in parts.types and (daemon_from or local == "postmaster"):
        marks.append("content-type:multipart/report")
    return tuple(_dedupe(marks))


# --------------------------------------------------------------------------- HTML -> text

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


def html_to_text(markup: str) -> str:
    """Readable text of an HTML body; never raises."""
    parser = _HtmlText()
    try:
        parser.feed(markup)
        parser.close()
    except (AssertionError, ValueError, IndexError):  # html.parser's own failure modes
        return html.unescape(re.sub(r"<[^>]*>", " ", markup))
    return parser.result()
