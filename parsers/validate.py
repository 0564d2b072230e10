"""Raw form fields -> ValidRequest, or every Problem at once (DESIGN §2).

The partner fixes the form in one round trip only if the rejection lists
every problem, so each rule runs regardless of the others. Problems are
values with English and German wording; nothing here does I/O except the
injected ``open_ref_for_domain`` look-up.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

import email_validator
import idna

from parsers.form import FIELDS, LANGUAGES, FormResult, label as form_label

NAME_MIN = 2
NAME_MAX = 100
NOTE_MAX = 1000

# code -> (English, German); {placeholders} are the Problem's params.
MESSAGES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "no_form": (
        "No request form was found in the email.",
        "In der E-Mail wurde kein Antragsformular gefunden.",
    ),
    "too_large": (
        "The email is larger than {max}, so it was not read. Send the form as plain text without attachments.",
        "Die E-Mail ist größer als {max} und wurde daher nicht gelesen. Bitte senden Sie das Formular "
        "als reinen Text ohne Anhänge.",
    ),
    "missing": ("This field is required.", "Dieses Feld ist erforderlich."),
    "duplicate_field": (
        "This field was given more than once with different values.",
        "Dieses Feld wurde mehrmals mit unterschiedlichen Werten angegeben.",
    ),
    "too_short": (
        "Must be at least {min} characters long.",
        "Muss mindestens {min} Zeichen lang sein.",
    ),
    "too_long": (
        "Must be at most {max} characters long (it has {length}).",
        "Darf höchstens {max} Zeichen lang sein (es sind {length}).",
    ),
    "control_characters": (
        "Contains control characters.",
        "Enthält Steuerzeichen.",
    ),
    "invisible_characters": (
        "Contains invisible formatting characters (such as a right-to-left override or a zero-width "
        "space) that would disguise the name. Please type it again.",
        "Enthält unsichtbare Formatierungszeichen (etwa eine Rechts-nach-links-Umkehrung oder ein "
        "Leerzeichen ohne Breite), die den Namen verfälschen würden. Bitte geben Sie ihn neu ein.",
    ),
    "invalid_email": (
        "\"{address}\" is not a valid email address: {reason}.",
        "„{address}“ ist keine gültige E-Mail-Adresse ({reason}).",
    ),
    "multiple_emails": (
        "Give exactly one email address (found {count}).",
        "Bitte genau eine E-Mail-Adresse angeben (gefunden: {count}).",
    ),
    "invalid_domain": (
        "\"{domain}\" is not a valid domain name: {reason}.",
        "„{domain}“ ist kein gültiger Domainname ({reason}).",
    ),
    "customer_not_in_domain": (
        "The customer's address must be in the account domain {domain} or one of its subdomains.",
        "Die Adresse des Kunden muss in der Kontodomäne {domain} oder einer ihrer Subdomains liegen.",
    ),
    "too_many_users": (
        "At most {max} users can be added (found {count}).",
        "Es können höchstens {max} Benutzer hinzugefügt werden (gefunden: {count}).",
    ),
    "invalid_language": (
        "\"{value}\" is not a supported language; use en or de.",
        "„{value}“ ist keine unterstützte Sprache; bitte en oder de angeben.",
    ),
    "domain_taken": (
        "There is already an open or active request for this domain: {ref}.",
        "Für diese Domain gibt es bereits einen offenen oder aktiven Antrag: {ref}.",
    ),
})

# Short human reasons (English, as stored in params) -> German, phrased to
# fit in parentheses after either German sentence.
REASONS_DE: Mapping[str, str] = MappingProxyType({
    "the @ sign is missing": "das @-Zeichen fehlt",
    "nothing before the @ sign": "vor dem @-Zeichen steht nichts",
    "nothing after the @ sign": "nach dem @-Zeichen steht nichts",
    "it contains invalid characters": "ungültige Zeichen",
    "it contains spaces": "enthält Leerzeichen",
    "misplaced dot": "Punkt an falscher Stelle",
    "the domain has no dot": "Domain ohne Punkt",
    "the domain has an invalid top-level domain": "ungültige Top-Level-Domain",
    "the domain is reserved and cannot receive email": "reservierte Domain, die keine E-Mails empfangen kann",
    "it is too long": "zu lang",
    "a label starts or ends with a hyphen": "ein Teil beginnt oder endet mit einem Bindestrich",
    "it has an empty label": "leerer Teil zwischen zwei Punkten",
    "a label is too long": "ein Teil ist zu lang",
    "it includes a scheme such as https://": "mit Schema wie https://; bitte nur die Domain angeben",
    "it includes a path": "mit Pfad; bitte nur die Domain angeben",
    "it includes a port": "mit Port; bitte nur die Domain angeben",
    "it includes an @ sign; give the domain only": "mit @-Zeichen; bitte nur die Domain angeben",
    "it needs at least two labels, such as example.com": "mindestens zwei Teile nötig, etwa example.com",
    "it is an IP address": "IP-Adresse statt Domainname",
    "it is not a valid international domain name": "kein gültiger internationaler Domainname",
    "a bracketed IP address is not allowed": "IP-Adresse in eckigen Klammern nicht erlaubt",
})
# German wording when the reason has no German translation (a rare email-validator message).
_NO_REASON_DE: Mapping[str, str] = MappingProxyType({
    "invalid_email": "„{address}“ ist keine gültige E-Mail-Adresse.",
    "invalid_domain": "„{domain}“ ist kein gültiger Domainname.",
})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the form, for the rejection email (DESIGN §1 step 2)."""

    field: str | None                           # None for "no_form"
    code: str
    params: tuple[tuple[str, str], ...] = ()

    def label(self, lang: str) -> str:
        """The field's form label in ``lang``; "" when the problem is not about a field."""
        return "" if self.field is None else form_label(self.field, lang)

    def message(self, lang: str) -> str:
        """What is wrong, one short sentence in ``lang`` ("en" or "de")."""
        english, german = MESSAGES[self.code]
        values = dict(self.params)
        if lang != "de":
            return english.format_map(_Defaulting(values))
        reason = values.get("reason")
        if reason is not None and reason not in REASONS_DE:
            german = _NO_REASON_DE.get(self.code, german)
        elif reason is not None:
            values["reason"] = REASONS_DE[reason]
        return german.format_map(_Defaulting(values))


class _Defaulting(dict[str, str]):
    """Leaves a placeholder empty rather than crash when a param is missing."""

    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True)
class ValidRequest:
    """A form that passed every rule, normalised for storage."""

    account_name: str
    customer_email: str            # normalised, lower-cased
    account_domain: str            # lower-case Unicode form (IDNA UTS46 round trip)
    note_to_customer: str
    user_emails: tuple[str, ...]   # normalised, lower-cased, first occurrence kept
    note_to_users: str
    language: str                  # "en" | "de"


_LINE_SPACE = re.compile(r"[ \t\r\n]+")
_SHOWN_MAX = 80      # longest user text quoted back in a problem message
_MAX_CHECKED = 1000  # user addresses checked one by one at most
_ADDRESS_MAX = 320   # longer than any deliverable address (RFC 5321: 64 + 1 + 255)


def _shown(text: str) -> str:
    """User text quoted in a message: one line, and not a megabyte of it."""
    line = _LINE_SPACE.sub(" ", text).strip()
    return line if len(line) <= _SHOWN_MAX else line[: _SHOWN_MAX - 1] + "…"


# --- languages ------------------------------------------------------------

_LANGUAGE_NAMES: Mapping[str, str] = MappingProxyType({
    "en": "en", "english": "en", "englisch": "en",
    "de": "de", "deutsch": "de", "german": "de",
})
_LANGUAGE_TAG = re.compile(r"([a-z]{2})[-_][a-z]{2}")


def _language(value: str) -> str | None:
    """``en``/``de``, language names, and tags such as ``de-AT``; None otherwise."""
    text = value.strip().casefold()
    tag = _LANGUAGE_TAG.fullmatch(text)
    if tag is not None and tag[1] in LANGUAGES:
        return tag[1]
    return _LANGUAGE_NAMES.get(text)


def request_language(form: FormResult, default_language: str) -> str:
    """The Language field if valid, else the labels' language, else the default."""
    return (
        _language(form.fields.get("language", ""))
        or form.label_language
        or default_language
    )


# --- text fields ----------------------------------------------------------


def _control_characters(text: str, allowed: str = "") -> bool:
    return any(unicodedata.category(c) == "Cc" and c not in allowed for c in text)


def _invisible_characters(text: str) -> bool:
    """Direction overrides and isolates, zero-width characters, other invisible formatting (DESIGN §2):
    a name shown in a subject and to the customer must read as what it is."""
    return any(unicodedata.category(c) == "Cf" for c in text)


def _check_name(value: str, problems: list[Problem]) -> str:
    """One line, 2–100 characters; a name wrapped by the mail client is joined again."""
    name = unicodedata.normalize("NFC", _LINE_SPACE.sub(" ", value).strip())
    if not name:
        problems.append(Problem("account_name", "missing"))
        return name
    if _control_characters(name):
        problems.append(Problem("account_name", "control_characters"))
    if _invisible_characters(name):
        problems.append(Problem("account_name", "invisible_characters"))
    if len(name) < NAME_MIN:
        problems.append(Problem("account_name", "too_short", (("min", str(NAME_MIN)),)))
    if len(name) > NAME_MAX:
        problems.append(Problem("account_name", "too_long", (("max", str(NAME_MAX)), ("length", str(len(name))))))
    return name


def _check_note(field: str, value: str, problems: list[Problem]) -> str:
    """Free text; line breaks and tabs are fine, other control characters are not."""
    note = unicodedata.normalize("NFC", value.strip())
    if _control_characters(note, allowed="\n\t"):
        problems.append(Problem(field, "control_characters"))
    if len(note) > NOTE_MAX:
        problems.append(Problem(field, "too_long", (("max", str(NOTE_MAX)), ("length", str(len(note))))))
    return note


# --- email addresses ------------------------------------------------------

# "Name <addr>", quoted names, bare addresses, separators; one linear scan.
_ADDRESS_TOKEN = re.compile(
    r'"(?:[^"\\\n]|\\.)*"?'          # a quoted display name
    r"|<[^<>\n]*>?"                  # <addr>
    r"|\[[^\[\]\n]*\]\([^()\n]*\)"   # Markdown link [text](mailto:addr) from HTML-to-text
    r"|[,;\n]"                       # hard separators
    r'|[^\s,;<>"]+'                  # a word or bare address
)
_MARKDOWN_LINK = re.compile(r"\[[^\[\]]*\]\(([^()]*)\)")


def _unwrap(token: str) -> str:
    """``<mailto:a@b>``, ``[a@b](mailto:a@b)`` -> ``a@b``."""
    link = _MARKDOWN_LINK.fullmatch(token)
    if link is not None:
        token = link[1]
    elif token.startswith("<"):
        token = token[1:].removesuffix(">")
    token = token.strip()
    if token[:7].casefold() == "mailto:":
        token = token[7:]
    return token


def _address_candidates(value: str) -> list[str]:
    """Split a list of addresses; words before ``<addr>`` are a display name and dropped.

    Separators are commas, semicolons, spaces and new lines (DESIGN §2).
    An address directly followed by ``<...>`` is Outlook's "a@b <mailto:a@b>".
    """
    tokens = _ADDRESS_TOKEN.findall(value)
    found: list[str] = []
    pending: list[str] = []         # words that may be a display name
    for i, token in enumerate(tokens):
        if token in (",", ";", "\n"):
            found.extend(pending)
            pending = []
        elif token.startswith(("<", "[")):
            pending = []
            found.append(_unwrap(token))
        elif token.startswith('"'):
            pending.append(token)
        elif "@" in token and not (i + 1 < len(tokens) and tokens[i + 1].startswith("<")):
            found.extend(pending)
            pending = []
            found.append(_unwrap(token))
        else:
            pending.append(token)
    found.extend(pending)
    return [c for c in found if c]


# email-validator's message -> our short reason; the first match wins.
_EMAIL_REASONS: tuple[tuple[str, str], ...] = (
    ("must have an @-sign", "the @ sign is missing"),
    ("something before the @-sign", "nothing before the @ sign"),
    ("something after the @-sign", "nothing after the @ sign"),
    ("special-use or reserved", "the domain is reserved and cannot receive email"),
    ("should have a period", "the domain has no dot"),
    ("valid top-level domain", "the domain has an invalid top-level domain"),
    ("bracketed ip address", "a bracketed IP address is not allowed"),
    ("characters: space", "it contains spaces"),
    ("invalid character", "it contains invalid characters"),
    ("period", "misplaced dot"),
    ("too long", "it is too long"),
    ("too many characters", "it is too long"),
    ("hyphen", "a label starts or ends with a hyphen"),
)


def _email_reason(message: str) -> str:
    lowered = message.casefold()
    return next((ours for theirs, ours in _EMAIL_REASONS if theirs in lowered), message.rstrip("."))


@dataclass(frozen=True)
class _Address:
    email: str          # normalised, lower-cased
    ascii_domain: str


def _check_address(field: str, candidate: str, problems: list[Problem]) -> _Address | None:
    """One address through email-validator, syntax only: no DNS (no I/O in parsers)."""
    if len(candidate) > _ADDRESS_MAX:
        problems.append(Problem(field, "invalid_email", (("address", _shown(candidate)), ("reason", "it is too long"))))
        return None
    try:
        checked = email_validator.validate_email(candidate, check_deliverability=False)
    except email_validator.EmailNotValidError as error:
        reason = _email_reason(str(error))
        problems.append(Problem(field, "invalid_email", (("address", _shown(candidate)), ("reason", reason))))
        return None
    return _Address(checked.normalized.lower(), checked.ascii_domain.lower())


def _check_customer(value: str, problems: list[Problem]) -> _Address | None:
    candidates = _address_candidates(value)
    if not candidates:
        problems.append(Problem("customer_email", "missing"))
        return None
    with_at = [c for c in candidates if "@" in c]
    if len(with_at) > 1:
        problems.append(Problem("customer_email", "multiple_emails", (("count", str(len(with_at))),)))
        return None
    if len(candidates) > 1:   # "Bob Smith bob@x" etc.: report the whole value as one bad address
        return _check_address("customer_email", " ".join(candidates), problems)
    return _check_address("customer_email", candidates[0], problems)


def _check_users(value: str, max_users: int, problems: list[Problem]) -> tuple[str, ...]:
    """Each address valid, duplicates dropped, at most ``max_users``.

    A pasted list far over any sane size is reported as too many without
    checking (and listing) every entry, which would flood the rejection email.
    """
    unique: dict[str, str] = {}
    for candidate in _address_candidates(value):
        unique.setdefault(candidate.casefold(), candidate)
    candidates = list(unique.values())
    if len(candidates) > max(_MAX_CHECKED, max_users):
        problems.append(Problem("user_emails", "too_many_users", (("max", str(max_users)), ("count", str(len(candidates))))))
        return ()
    emails: dict[str, None] = {}
    for candidate in candidates:
        address = _check_address("user_emails", candidate, problems)
        if address is not None:
            emails.setdefault(address.email)
    if len(emails) > max_users:
        problems.append(Problem("user_emails", "too_many_users", (("max", str(max_users)), ("count", str(len(emails))))))
    return tuple(emails)


# --- the account domain ---------------------------------------------------

_NUMERIC_LABEL = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class _Domain:
    unicode: str        # lower-case U-labels, what we store and show
    ascii: str          # A-labels, for comparisons


def _domain_reason(text: str) -> str | None:
    """What makes ``text`` not a bare domain name, before IDNA looks at it."""
    if "://" in text:
        return "it includes a scheme such as https://"
    if "@" in text:
        return "it includes an @ sign; give the domain only"
    if "/" in text or "\\" in text:
        return "it includes a path"
    if ":" in text:
        return "it includes a port"
    if any(c.isspace() for c in text):
        return "it contains spaces"
    return None


def _idna_reason(error: idna.IDNAError) -> str:
    text = str(error).casefold()
    if "hyphen" in text:
        return "a label starts or ends with a hyphen"
    if "empty label" in text:
        return "it has an empty label"
    if "label too long" in text:
        return "a label is too long"
    if "too long" in text:
        return "it is too long"
    if "codepoint" in text:
        return "it contains invalid characters"
    return "it is not a valid international domain name"


def _check_domain(value: str, problems: list[Problem]) -> _Domain | None:
    """A bare host name, international allowed; one trailing dot (FQDN) is tolerated."""
    text = value.strip()
    if not text:
        problems.append(Problem("account_domain", "missing"))
        return None
    reason = _domain_reason(text)
    domain: _Domain | None = None
    if reason is None:
        name = text.removesuffix(".")
        try:
            ascii_name = idna.encode(name, uts46=True, std3_rules=True).decode("ascii")
            domain = _Domain(idna.decode(ascii_name).lower(), ascii_name.lower())
        except idna.IDNAError as error:
            reason = _idna_reason(error)
    if domain is not None:
        labels = domain.ascii.split(".")
        if len(labels) < 2:
            reason = "it needs at least two labels, such as example.com"
        elif _NUMERIC_LABEL.fullmatch(labels[-1]):
            reason = "it is an IP address" if all(_NUMERIC_LABEL.fullmatch(x) for x in labels) \
                else "the domain has an invalid top-level domain"
        elif labels[-1] in email_validator.SPECIAL_USE_DOMAIN_NAMES:
            reason = "the domain is reserved and cannot receive email"
    if reason is not None:
        problems.append(Problem("account_domain", "invalid_domain", (("domain", _shown(text)), ("reason", reason))))
        return None
    return domain


def _in_domain(address: _Address, domain: _Domain) -> bool:
    return address.ascii_domain == domain.ascii or address.ascii_domain.endswith("." + domain.ascii)


# --- the whole form -------------------------------------------------------

def validate(
    form: FormResult,
    *,
    max_users: int,
    require_customer_in_domain: bool,
    default_language: str,
    open_ref_for_domain: Callable[[str], str | None],
) -> ValidRequest | list[Problem]:
    """Every rule of DESIGN §2; all problems in form order, never just the first."""
    if not form.found:
        return [Problem(None, "no_form")]
    problems = [Problem(field, "duplicate_field") for field in form.duplicates]
    values = form.fields

    name = _check_name(values.get("account_name", ""), problems)
    customer = _check_customer(values.get("customer_email", ""), problems)
    domain = _check_domain(values.get("account_domain", ""), problems)
    if require_customer_in_domain and customer is not None and domain is not None \
            and not _in_domain(customer, domain):
        problems.append(Problem("customer_email", "customer_not_in_domain", (("domain", domain.unicode),)))
    if domain is not None:
        ref = open_ref_for_domain(domain.unicode)
        if ref is not None:
            problems.append(Problem("account_domain", "domain_taken", (("ref", ref),)))
    note_to_customer = _check_note("note_to_customer", values.get("note_to_customer", ""), problems)
    users = _check_users(values.get("user_emails", ""), max_users, problems)
    note_to_users = _check_note("note_to_users", values.get("note_to_users", ""), problems)
    raw_language = values.get("language", "").strip()
    language = _language(raw_language) if raw_language else None
    if raw_language and language is None:
        problems.append(Problem("language", "invalid_language", (("value", _shown(raw_language)),)))

    if problems or customer is None or domain is None:
        return _in_field_order(problems)
    return ValidRequest(
        account_name=name,
        customer_email=customer.email,
        account_domain=domain.unicode,
        note_to_customer=note_to_customer,
        user_emails=users,
        note_to_users=note_to_users,
        language=language or form.label_language or default_language,
    )


_ORDER: Mapping[str, int] = MappingProxyType({f.name: i for i, f in enumerate(FIELDS)})


def _in_field_order(problems: list[Problem]) -> list[Problem]:
    """Problems grouped by field in form order, as the partner reads the form; stable within a field."""
    return sorted(problems, key=lambda p: -1 if p.field is None else _ORDER.get(p.field, len(_ORDER)))


def form_domain(form: FormResult) -> str | None:
    """The account domain as validate() stores it, or None when it is not valid: the key by which
    the open request for a domain is looked up before deciding."""
    domain = _check_domain(form.fields.get("account_domain", ""), [])
    return domain.unicode if domain is not None else None
