"""Reply keyword, reference and token extraction (DESIGN §3).

Line-based and self-written: mail-parser-reply only trims top-posted replies
(a bottom-posted "On … wrote:" reply comes back with the quote still in it).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from parsers.message import ParsedMessage, ascii_domain
from parsers.ref import find_refs as refs_in

MAX_TOKENS = 20
MAX_SCAN_LINES = 5_000      # lines of a reply inspected before giving up
MAX_HEADER_LINE = 1_000     # characters; a longer line is never a quote header or separator
MAX_KEYWORD_LINE = 200      # characters; a longer line never states a decision
TOKEN_LENGTH = 26           # 128 random bits in lower-case base32


class Keyword(enum.Enum):
    CONFIRM = "CONFIRM"
    CANCEL = "CANCEL"
    ACCEPT = "ACCEPT"
    DECLINE = "DECLINE"
    STATUS = "STATUS"
    HELP = "HELP"


# The one table of what a reply's line may say (DESIGN §3): each keyword in both languages, first
# the word our emails ask for, then a short fixed list of unambiguous phrasings. The whole line
# must be one of them, after case, spacing and trailing full stops, exclamation marks and commas;
# a question mark never goes: "ACCEPT?" asks. Negations and hedges ("I do not accept", "accept
# after the review") and bare "yes", "ok", "ja" are not in it, so they are never decisions.
PHRASES: dict[Keyword, dict[str, tuple[str, ...]]] = {
    Keyword.CONFIRM: {
        "en": ("CONFIRM", "I CONFIRM", "CONFIRMED", "YES, I CONFIRM", "YES I CONFIRM", "CONFIRM THE REQUEST"),
        "de": ("BESTÄTIGEN", "BESTAETIGEN", "ICH BESTÄTIGE", "ICH BESTAETIGE", "BESTÄTIGT", "BESTAETIGT",
               "JA, ICH BESTÄTIGE", "JA ICH BESTÄTIGE"),
    },
    Keyword.CANCEL: {
        "en": ("CANCEL", "I CANCEL", "CANCELLED", "CANCELED", "PLEASE CANCEL", "CANCEL THE REQUEST",
               "CANCEL MY REQUEST"),
        "de": ("STORNIEREN", "ICH STORNIERE", "STORNIERT", "BITTE STORNIEREN", "ANTRAG STORNIEREN"),
    },
    Keyword.ACCEPT: {
        "en": ("ACCEPT", "I ACCEPT", "ACCEPTED", "YES, I ACCEPT", "YES I ACCEPT", "I AGREE"),
        "de": ("AKZEPTIEREN", "ICH AKZEPTIERE", "AKZEPTIERT", "ANGENOMMEN", "ICH NEHME AN",
               "JA, ICH AKZEPTIERE", "JA ICH AKZEPTIERE"),
    },
    Keyword.DECLINE: {
        "en": ("DECLINE", "I DECLINE", "DECLINED", "NO, I DECLINE", "NO I DECLINE"),
        "de": ("ABLEHNEN", "ICH LEHNE AB", "ABGELEHNT", "NEIN, ICH LEHNE AB", "NEIN ICH LEHNE AB"),
    },
    Keyword.STATUS: {"en": ("STATUS",), "de": ()},
    Keyword.HELP: {"en": ("HELP",), "de": ("HILFE",)},
}

# Every spelling -> (keyword, language), derived from PHRASES.
KEYWORDS: dict[str, tuple[Keyword, str]] = {
    phrase: (keyword, lang) for keyword, langs in PHRASES.items() for lang, phrases in langs.items()
    for phrase in phrases
}


def spelling(keyword: Keyword, lang: str) -> str:
    """The word our emails ask for: ACCEPT, AKZEPTIEREN."""
    return (PHRASES[keyword].get(lang) or PHRASES[keyword]["en"])[0]


@dataclass(frozen=True)
class Command:
    keyword: Keyword
    language: str            # "en" | "de"; STATUS is "de" only when the reply quotes a German header
    ref: str | None          # "SA-000042" when the line says "STATUS SA-000042"


# ----------------------------------------------------------------- quote headers

# "On … wrote:" in the languages mail clients ship: the line ends in the verb and a colon.
_WROTE = re.compile(
    r"(?:\bwrote|\bschrieb|написал\w*|\ba écrit|\bescribió|\bha scritto|\bschreef|\bskrev|\bnapisał\w*"
    r"|\bkirjoitti)\s*:\s*$",
    re.IGNORECASE,
)
# German clients also put the verb first: "Am 24.11.2026 um 10:00 schrieb Name <a@b>:".
_SCHRIEB = re.compile(r"\bschrieb\b", re.IGNORECASE)
_ATTRIBUTION_LEAD = re.compile(r"^\s*(?:on|am|le|el|il|op|den|w dniu)\s|\d|@", re.IGNORECASE)
# The first half of a wrapped attribution: starts like one, or carries a date.
_WRAPPED_LEAD = re.compile(r"^\s*(?:on|am|le|el|il|op|den|w dniu)\s|^\s*\d{1,4}[./-]\d{1,2}[./-]\d{1,4}",
                           re.IGNORECASE)
_SEPARATOR = re.compile(
    r"^\s*(?:-{2,}\s*(?:original message|ursprüngliche nachricht|urspr\S*ngliche nachricht|forwarded message"
    r"|weitergeleitete nachricht|reply message|antwort)\s*-{2,}|_{10,}|begin forwarded message:"
    r"|anfang der weitergeleiteten nachricht:)\s*$",
    re.IGNORECASE,
)
_HDR_FROM = re.compile(r"^\s*\**(?:from|von|de)\s*:\**\s", re.IGNORECASE)
_HDR_OTHER = re.compile(r"^\s*\**(?:sent|gesendet|date|datum|to|an|subject|betreff|cc)\s*:\**(?:\s|$)", re.IGNORECASE)
_GERMAN_LABEL = re.compile(r"^\s*(?:\**von\s*:|\**gesendet\s*:|-+\s*urspr)", re.IGNORECASE)
_GERMAN_AM = re.compile(r"^\s*am\b", re.IGNORECASE)


def _short(line: str) -> bool:
    """Quote headers and separators are short lines; longer ones are never inspected by a pattern."""
    return len(line) <= MAX_HEADER_LINE


def _is_header_block(lines: list[str], i: int) -> bool:
    """Outlook's "From:/Sent:/To:/Subject:" block: a From: line followed closely by two more labels."""
    if not (_short(lines[i]) and _HDR_FROM.match(lines[i])):
        return False
    labels = sum(1 for line in lines[i + 1:i + 7] if _short(line) and _HDR_OTHER.match(line))
    return labels >= 2


def _says_wrote(text: str) -> bool:
    stripped = text.rstrip()
    return stripped.endswith(":") and bool(_WROTE.search(stripped) or _SCHRIEB.search(stripped))


def _attribution_length(lines: list[str], i: int) -> int:
    """1 or 2 when lines[i] starts an "On <date>, <name> wrote:" line, else 0."""
    line = lines[i]
    if not _short(line):
        return 0
    if _ATTRIBUTION_LEAD.search(line) and _says_wrote(line):
        return 1
    if i + 1 < len(lines) and _WRAPPED_LEAD.search(line) and not line.rstrip().endswith(":"):
        joined = f"{line.rstrip()} {lines[i + 1].strip()}"
        if _short(joined) and _says_wrote(joined):
            return 2
    return 0


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _is_original(lines: list[str], i: int) -> bool:
    """Where the original email begins: a separator line or Outlook's header block."""
    return (_short(lines[i]) and bool(_SEPARATOR.match(lines[i]))) or _is_header_block(lines, i)


def _quote_follows(lines: list[str], i: int) -> bool:
    """An attribution heads a quote only when the quote follows it: "> " lines (HTML quotes come out
    as those too), or the original in Outlook's form (Yahoo writes "--- On … wrote:" above a
    "From:/Sent:" block). "DECLINE - as my boss (boss@acme.example) wrote:" above an own line
    is the answer itself (DESIGN §3)."""
    for j in range(i, len(lines)):
        if lines[j].strip():
            return _is_quoted(lines[j]) or _is_original(lines, j)
    return False


def reply_text(text: str) -> str:
    """The new part of a reply: quoted lines, quote headers and Outlook's unquoted original dropped."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[:MAX_SCAN_LINES]
    own: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_original(lines, i):
            break                      # everything below is the original, quoted or not
        skip = _attribution_length(lines, i)
        if skip and _quote_follows(lines, i + skip):
            i += skip
            continue
        if not _is_quoted(line):
            own.append(line.rstrip())
        i += 1
    return "\n".join(own).strip("\n")


def _is_german_header(line: str) -> bool:
    """Outlook's "Von:/Gesendet:" or a German attribution: the language a bare STATUS is answered in."""
    if not _short(line):
        return False
    if _GERMAN_LABEL.match(line):
        return True
    return bool(_SCHRIEB.search(line)) and (bool(_GERMAN_AM.match(line)) or line.rstrip().endswith(":"))


# ----------------------------------------------------------------- commands

# Never meaningful, and dropped before anything is compared: "AC\u200bCEPT" reads as ACCEPT.
_INVISIBLE = str.maketrans({c: None for c in "\u200b\u200c\u200d\u2060\ufeff\u00ad"})
# DESIGN §3: trailing full stops (an ellipsis is three), exclamation marks and commas are ignored,
# never a question mark: "ACCEPT?" is a question, not a decision.
_TRAILING = ".!,\u2026"
# Emphasis that plain-text parts and Markdown write around a word: *ACCEPT*, **ACCEPT**, _ACCEPT_,
# `ACCEPT`. Accepted only when the same marks close as open, so "*ACCEPT" (a footnote, a bullet)
# is not a decision. "~" is not among them: ~~ACCEPT~~ is struck through.
_EMPHASIS = "*_`"
_WITH_REF = re.compile(r"^(.{1,60}?)\s*[:#-]?\s*(SA-\d{6,12})$")   # "STATUS SA-000042", "CONFIRM: SA-000042"


def _is_blank(line: str) -> bool:
    return not line.translate(_INVISIBLE).strip(" \t\u00a0" + _EMPHASIS + "~")


def _bare(line: str) -> str:
    return line.strip().rstrip(_TRAILING).rstrip()


def _keyword_words(line: str) -> str | None:
    """The words a line states, upper-case, punctuation and symmetric emphasis removed; None when the
    line is too long to be a keyword line (DESIGN §3: the whole line must state the decision)."""
    if len(line) > MAX_KEYWORD_LINE:
        return None
    word = _bare(line.translate(_INVISIBLE))
    opening = len(word) - len(word.lstrip(_EMPHASIS))
    closing = len(word) - len(word.rstrip(_EMPHASIS))
    if opening or closing:
        if word[:opening] != word[len(word) - closing:][::-1]:
            return None
        word = _bare(word[opening:len(word) - closing])
    return " ".join(word.split()).upper()


def find_command(text: str) -> Command | None:
    """The keyword on the first own non-empty line; the line must BE the keyword or one of its
    phrasings (DESIGN §3), optionally followed by a reference: "CONFIRM SA-000042"."""
    words = _keyword_words(first_line(text))
    if not words:
        return None
    with_ref = _WITH_REF.match(words)
    words, ref = (with_ref.group(1), with_ref.group(2)) if with_ref else (words, None)
    entry = KEYWORDS.get(words)
    if entry is None:
        return None
    keyword, lang = entry
    if keyword is Keyword.STATUS:
        german = any(_is_german_header(line) for line in text.split("\n", MAX_SCAN_LINES)[:MAX_SCAN_LINES])
        lang = "de" if german else "en"
    return Command(keyword=keyword, language=lang, ref=ref)


def first_line(text: str) -> str:
    """The first non-empty line the writer wrote themselves (above or below the quote), at most
    MAX_KEYWORD_LINE characters: what an answer may say it read."""
    own = reply_text(text)
    line = next((line for line in own.split("\n") if not _is_blank(line)), "")
    return line.strip()[:MAX_KEYWORD_LINE + 1]


# ----------------------------------------------------------------- tokens and refs

_TOKEN_EXACT = re.compile(rf"[a-z2-7]{{{TOKEN_LENGTH}}}")
# The footer line our templates write (templates/*/_base.{txt,html}.j2): "Ref: SA-000042 · Code: <token>",
# alone on its line. It comes back quoted ("> ", "> > "), converted from HTML, unquoted below
# Outlook's header block or in a one-click answer, and with the middle dot mangled by a charset
# ("Â·", "?"): a few characters of anything may stand between the reference and "Code:".
_CODE_LINE = re.compile(r"^[ \t>]*(?:Ref:[ \t]*SA-\d{6,12}[^\n]{0,12}?)?"
                        rf"Code:[ \t]*([A-Za-z2-7]{{{TOKEN_LENGTH}}})[ \t]*$",
                        re.IGNORECASE | re.MULTILINE)


def token_candidates(msg: ParsedMessage, own_domain: str) -> tuple[str, ...]:
    """Possible reply tokens, found only where we put them (DESIGN §3), most trustworthy first:
    the Reply-To plus-address (back in To/Cc/Delivered-To/X-Original-To), then the `Code:`
    footer line. A word of the right length anywhere else ("Datenschutzgrundverordnung") is
    not a token. Our Message-IDs carry no token: `own_message_ids` finds those."""
    domain = ascii_domain(own_domain)
    found: dict[str, None] = {}

    def add(candidate: str) -> None:
        if len(found) < MAX_TOKENS:
            found.setdefault(candidate.lower(), None)

    for addr in msg.recipients:
        local, _, at = addr.rpartition("@")
        if "+" in local and ascii_domain(at) == domain:
            tail = local.rsplit("+", 1)[1].lower()
            if _TOKEN_EXACT.fullmatch(tail):
                add(tail)
    for match in _CODE_LINE.finditer(msg.text):
        if len(found) >= MAX_TOKENS:
            break
        add(match.group(1))
    return tuple(found)


def own_message_ids(msg: ParsedMessage, own_domain: str) -> tuple[str, ...]:
    """Our own Message-IDs named in In-Reply-To/References: each maps to the token of the email
    it identifies, through the database (DESIGN §3)."""
    domain = ascii_domain(own_domain)
    ids = (i for i in (*msg.in_reply_to, *msg.references) if ascii_domain(i.rpartition("@")[2]) == domain)
    return tuple(dict.fromkeys(ids))[:MAX_TOKENS]


def find_refs(msg: ParsedMessage) -> tuple[str, ...]:
    """"SA-000042" style references, subject first, upper-cased, each once."""
    return tuple(dict.fromkeys([*refs_in(msg.subject), *refs_in(msg.text)]))
