"""Email body text -> the raw request-form fields (DESIGN §2).

The form is plain ``Label: value`` lines, written by people and mangled by
mail clients, so labels are matched loosely (case, bullets, hyphens,
umlaut spellings, Markdown bold) while values are kept as written.
The parser is a single pass over the lines: linear in the input, no
backtracking regex on unbounded text, because it runs on every email.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class FieldSpec:
    """One form field and its labels, spelled exactly as in DESIGN §2."""

    name: str
    en: str
    de: str
    required: bool
    # A multi-line field keeps following lines; a single-line one takes at
    # most one line, so a signature right below it is never swallowed.
    multiline: bool = True


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("account_name", "Account Name", "Kontoname", True, True),
    FieldSpec("customer_email", "Customer Email", "Kunden-E-Mail", True, False),
    FieldSpec("account_domain", "Account Domain", "Kontodomäne", True, False),
    FieldSpec("note_to_customer", "Note to Customer", "Hinweis für den Kunden", False, True),
    FieldSpec("user_emails", "User Emails", "Benutzer-E-Mails", False, True),
    FieldSpec("note_to_users", "Note to Added Users", "Hinweis für hinzugefügte Benutzer", False, True),
    FieldSpec("language", "Language", "Sprache", False, False),
)

LANGUAGES: tuple[str, ...] = ("en", "de")

# Extra spellings people use; the contract labels stay in FIELDS.
_ALIASES: tuple[tuple[str, str, str], ...] = (
    ("user_emails", "en", "User Email"),
    ("user_emails", "de", "Benutzer-E-Mail"),
)

_SPECS: Mapping[str, FieldSpec] = MappingProxyType({f.name: f for f in FIELDS})


def label(field: str, lang: str) -> str:
    """The form label of ``field`` in ``lang`` ("en" or "de"); KeyError/ValueError otherwise."""
    spec = _SPECS[field]
    if lang == "en":
        return spec.en
    if lang == "de":
        return spec.de
    raise ValueError(f"unknown language: {lang!r}")


@dataclass(frozen=True)
class FormResult:
    """What the form said, before any validation."""

    fields: dict[str, str]          # field name -> value as written, stripped; lines joined with "\n"
    label_language: str | None      # "en" / "de": the language most labels were written in
    duplicates: tuple[str, ...]     # fields given more than once (first value kept)

    @property
    def found(self) -> bool:
        """At least one label was recognised."""
        return self.label_language is not None


# --- label keys -----------------------------------------------------------

_UMLAUTS_AE = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue"})
_UMLAUTS_A = str.maketrans({"ä": "a", "ö": "o", "ü": "u"})
_NON_WORD = re.compile(r"[\W_]+")


def _key(text: str) -> str:
    """Fold a label to letters only: case, width, hyphens, spaces and NBSP don't matter."""
    return _NON_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())


def _build_keys() -> Mapping[str, tuple[str, str]]:
    """Every accepted label key -> (field, language), umlaut fallbacks included."""
    spellings = [(f.name, "en", f.en) for f in FIELDS] + [(f.name, "de", f.de) for f in FIELDS]
    keys: dict[str, tuple[str, str]] = {}
    for name, lang, text in spellings + list(_ALIASES):
        base = _key(text)
        for variant in (base, base.translate(_UMLAUTS_AE), base.translate(_UMLAUTS_A)):
            keys[variant] = (name, lang)
    return MappingProxyType(keys)


_KEYS = _build_keys()

# --- line shapes ----------------------------------------------------------

# Invisible characters that mail clients and editors leave behind; never meaningful.
_INVISIBLE = str.maketrans({c: None for c in "\u200b\u2060\ufeff\u00ad\u200e\u200f"})
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_COLON = re.compile(r"[:：]")
_MAX_HEAD = 80   # a label plus its decoration is never longer than this

# Leading list markers that people and HTML-to-text converters put before a label.
_BULLETS = "•·‣◦▪●○■□➢►-–—|"
# Numbering, Markdown emphasis, the label, an "(optional)" remark; no nested
# quantifiers, and the head is at most _MAX_HEAD characters.
_HEAD = re.compile(
    r"^(?:\d{1,3}[.)]\s+)?(?P<open>\*{1,2}|_{1,2})?(?P<label>[^*_()]*)"
    r"(?:\([^()]*\))?\s*(?P<close>\*{1,2}|_{1,2})?\s*$"
)
# Where a reply's original message begins; after a form was found, parsing stops there.
_ORIGINAL = re.compile(
    r"^(?:-{2,}\s*(?:original message|ursprüngliche nachricht|forwarded message"
    r"|weitergeleitete nachricht)\s*-{2,}|_{10,}|begin forwarded message:)$",
    re.IGNORECASE,
)
_JOINERS = str.maketrans({"\u200c": None, "\u200d": None})


@dataclass(frozen=True)
class _LabelLine:
    field: str
    lang: str
    value: str


def _is_blank(line: str) -> bool:
    return not line.translate(_JOINERS).strip()


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _is_signature(line: str) -> bool:
    """``-- `` per RFC 3676, and the ``--`` that clients leave after trimming."""
    return line.rstrip() == "--"


def _strip_bullets(head: str) -> str:
    """Drop leading bullets; "*" is a bullet only before a space (else it is Markdown bold)."""
    while True:
        head = head.lstrip().lstrip(_BULLETS)
        if head[:1] == "*" and head[1:2].isspace():
            head = head[1:]
        elif not head[:1].isspace():
            return head


def _label_line(line: str) -> _LabelLine | None:
    """The field a line starts, or None when it is not a label line."""
    stripped = line.lstrip()
    colon = _COLON.search(stripped, 0, _MAX_HEAD + 1)
    if colon is None:
        return None
    head = _HEAD.match(_strip_bullets(stripped[: colon.start()]))
    if head is None:
        return None
    found = _KEYS.get(_key(head["label"]))
    if found is None:
        return None
    value = stripped[colon.end():].strip()
    opening = head["open"]
    if opening and not head["close"] and value.startswith(opening):
        value = value[len(opening):].strip()     # "**Account Name:** value"
    return _LabelLine(found[0], found[1], value)


def _ends_value(line: str) -> bool:
    return _is_blank(line) or _is_quoted(line) or _is_signature(line)


def parse_form(text: str) -> FormResult:
    """Find the request form in email body text; never raises.

    An empty occurrence of a label never hides a filled one, and repeating
    the same value is harmless; only a second, different value is a duplicate.
    """
    lines = _LINE_BREAK.split(text.translate(_INVISIBLE))
    fields: dict[str, str] = {}
    duplicates: list[str] = []
    languages: list[str] = []
    current: str | None = None        # field whose value is still being read
    parts: list[str] = []             # its lines so far

    def finish() -> None:
        if current is None:
            return
        value = "\n".join(parts)
        first = fields.get(current, "")
        if not first:
            fields[current] = value
        elif value and value != first and current not in duplicates:
            duplicates.append(current)

    for line in lines:
        if _is_quoted(line):
            finish()
            current = None
            continue
        found = _label_line(line)
        if found is not None:
            finish()
            languages.append(found.lang)
            current, parts = found.field, [found.value] if found.value else []
            if parts and not _SPECS[current].multiline:
                finish()
                current = None
            continue
        if languages and _ORIGINAL.match(line.strip()):
            break
        if current is None:
            continue
        if _ends_value(line):
            finish()
            current = None
            continue
        parts.append(line.strip())
        if not _SPECS[current].multiline:
            finish()
            current = None
    finish()
    return FormResult(fields, _majority(languages), tuple(duplicates))


def _majority(languages: list[str]) -> str | None:
    """The most used label language; a tie goes to the first label's language."""
    if not languages:
        return None
    counts = Counter(languages)
    best = max(counts.values())
    return next(lang for lang in languages if counts[lang] == best)
