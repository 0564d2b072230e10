"""Every email kind in both languages, parsed back from the finished bytes (DESIGN §1-§3)."""

from __future__ import annotations

import datetime as dt
import random
import re
from dataclasses import dataclass, field, replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.mail.render import KINDS, LANGUAGES, Email, Renderer

UTC = dt.timezone.utc
FROM = "Smart Accounts <smart-accounts@example.com>"
TOKEN = "abcdefghijklmnopqrstuvwxyz"          # 26 base32 characters, like a real reply token
OTHER_TOKEN = "zyxwvutsrqponmlkjihgfedcba"
FOOTER = re.compile(r"Ref: (SA-\d{6,}) · Code: ([a-z2-7]{26})")
UMLAUT = re.compile(r"[äöüÄÖÜß]")
SENT_AT = dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

FORM_LABELS = {
    "en": ["Account Name", "Customer Email", "Account Domain", "Note to Customer",
           "User Emails", "Note to Added Users", "Language"],
    "de": ["Kontoname", "Kunden-E-Mail", "Kontodomäne", "Hinweis für den Kunden",
           "Benutzer-E-Mails", "Hinweis für hinzugefügte Benutzer", "Sprache"],
}
STATES = ("awaiting_confirmation", "pending_acceptance", "active", "rejected",
          "expired", "declined", "cancelled", "lapsed")


@dataclass(frozen=True)
class RequestView:
    """The attributes templates may use, as the Request model exposes them."""

    ref: str = "SA-000042"
    account_name: str = "Acme Widgets"
    account_domain: str = "acme.example"
    customer_email: str = "it-admin@acme.example"
    partner_email: str = "sales@partner.example"
    note_to_customer: str | None = "We set this up as agreed in our call.\nThanks, Jo"
    user_emails: list[str] = field(default_factory=lambda: ["ann@acme.example", "bob@acme.example"])
    note_to_users: str | None = "Welcome aboard."
    language: str = "en"
    state: str = "pending_acceptance"
    created_at: dt.datetime | None = dt.datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    confirmed_at: dt.datetime | None = dt.datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    expires_at: dt.datetime | None = dt.datetime(2027, 2, 24, 9, 0, tzinfo=UTC)
    review_expires_at: dt.datetime | None = dt.datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
    accepted_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None


@dataclass(frozen=True)
class Problem:
    """Shaped like parsers.validate.Problem: label and message per language."""

    labels: dict[str, str]
    messages: dict[str, str]

    def label(self, lang: str) -> str:
        return self.labels[lang]

    def message(self, lang: str) -> str:
        return self.messages[lang]


PROBLEMS = [
    Problem({"en": "Customer Email", "de": "Kunden-E-Mail"},
            {"en": "is not a valid email address", "de": "ist keine gültige E-Mail-Adresse"}),
    Problem({"en": "", "de": ""},
            {"en": "The email has more than one form.", "de": "Die E-Mail enthält mehr als ein Formular."}),
]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(FROM)


def context(kind: str, lang: str, renderer: Renderer, request: RequestView | None = None) -> dict[str, Any]:
    """A realistic ctx for each kind, as the workflow would build it."""
    request = request or RequestView(language=lang)
    ctx: dict[str, Any] = {"ref": request.ref, "request": request}
    extra: dict[str, dict[str, Any]] = {
        "rejection": {"problems": PROBLEMS,
                      "values": [("Account Name", "Acme Widgets"), ("Customer Email", "it-admin@")],
                      "form": renderer.blank_form(lang)},
        "help": {"form": renderer.blank_form(lang)},
        "user_notice": {"user": "ann@acme.example"},
        "cancelled_customer": {"by_admin": False, "reason": ""},
        "cancelled_partner": {"by_admin": False, "reason": ""},
        "reminder": {"days_left": 7},
        "late_reply": {"keyword": "ACCEPT" if lang == "en" else "AKZEPTIEREN"},
        "delivery_failed": {"failed_recipient": "it-admin@acme.example",
                            "error": "550 5.1.1 user unknown"},
        "answer": {"reason": "unclear", "line": "Yes please", "keyword": None, "party": "customer"},
    }
    ctx.update(extra.get(kind, {}))
    return ctx


def compose(renderer: Renderer, kind: str, lang: str, ctx: dict[str, Any], **kwargs: Any) -> Email:
    args: dict[str, Any] = {
        "to": ["sales@partner.example"],
        "message_id": "sa.1.review@smartacct.example.com",
        "date": SENT_AT,
        "in_reply_to": "CAFx1@mail.partner.example",
        "references": ["root@mail.partner.example"],
        "token": TOKEN,
    }
    args.update(kwargs)
    return renderer.compose(kind, lang, ctx, **args)


def parse(email: Email) -> EmailMessage:
    msg = message_from_bytes(email.raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> tuple[str, str]:
    """The text and the HTML part, decoded."""
    assert msg.get_content_type() == "multipart/alternative"
    leaves = [p for p in msg.iter_parts()]
    assert [p.get_content_type() for p in leaves] == ["text/plain", "text/html"]
    for part in leaves:
        assert part.get_content_charset() == "utf-8"
    text, html = (p.get_content() for p in leaves)
    assert isinstance(text, str) and isinstance(html, str)
    return text, html


def header_block(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode("ascii")


# --- every kind in every language ---------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_a_complete_threaded_message(renderer: Renderer, kind: str, lang: str) -> None:
    email = compose(renderer, kind, lang, context(kind, lang, renderer))
    msg = parse(email)

    assert msg["From"] == FROM
    assert msg["To"] == "sales@partner.example"
    assert parsedate_to_datetime(msg["Date"]) == SENT_AT
    assert msg["Message-ID"] == "<sa.1.review@smartacct.example.com>"
    assert msg["In-Reply-To"] == "<CAFx1@mail.partner.example>"
    assert msg["References"] == "<root@mail.partner.example> <CAFx1@mail.partner.example>"
    assert msg["Reply-To"] == f"smart-accounts+{TOKEN}@example.com"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Content-Language"] == lang
    assert "[SA-000042]" in msg["Subject"]
    assert msg["Subject"] == email.subject
    assert email.to == ("sales@partner.example",)
    assert email.message_id == "sa.1.review@smartacct.example.com"
    assert re.search(rb"(?<!\r)\n", email.raw) is None, "every line must end in CRLF"

    text, html = parts(msg)
    for body in (text, html):
        found = FOOTER.findall(body)
        assert found == [("SA-000042", TOKEN)]
        assert "http://" not in body and "https://" not in body, "no links at all"
    if lang == "de":
        assert UMLAUT.search(text) and UMLAUT.search(html)
        assert "Sie" in text and "Guten Tag" in text
    else:
        assert "Hello" in text and "Kind regards" in text
        assert not UMLAUT.search(text + html)
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert f'<html lang="{lang}">' in html


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_without_a_token_there_is_no_code_line_and_reply_to_is_bare(
    renderer: Renderer, kind: str, lang: str
) -> None:
    msg = parse(compose(renderer, kind, lang, context(kind, lang, renderer), token=None))
    text, html = parts(msg)
    assert not FOOTER.search(text) and not FOOTER.search(html)
    assert "Code:" not in text and "Code:" not in html
    assert msg["Reply-To"] == "smart-accounts@example.com"


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_templates_survive_a_request_with_every_optional_value_missing(
    renderer: Renderer, kind: str, lang: str
) -> None:
    bare = RequestView(language=lang, note_to_customer=None, user_emails=[], note_to_users=None,
                       confirmed_at=None, expires_at=None, review_expires_at=None,
                       accepted_at=None, closed_at=None, state="awaiting_confirmation")
    text, html = parts(parse(compose(renderer, kind, lang, context(kind, lang, renderer, bare))))
    assert "None" not in text and "None" not in html


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("kind", ["rejection", "help"])
def test_emails_about_no_request_have_no_ref(renderer: Renderer, kind: str, lang: str) -> None:
    ctx = context(kind, lang, renderer) | {"ref": None, "request": None}
    email = compose(renderer, kind, lang, ctx, token=None)
    msg = parse(email)
    assert "[" not in msg["Subject"] and "None" not in msg["Subject"]
    text, html = parts(msg)
    assert "None" not in text and "None" not in html


# --- what each email says --------------------------------------------------------------


@pytest.mark.parametrize(("lang", "confirm", "cancel", "deadline"), [
    ("en", "CONFIRM", "CANCEL", "8 December 2026"),
    ("de", "BESTÄTIGEN", "STORNIEREN", "8. Dezember 2026"),
])
def test_review_shows_every_value_without_form_lines(
    renderer: Renderer, lang: str, confirm: str, cancel: str, deadline: str
) -> None:
    request = RequestView(language=lang)
    text, html = parts(parse(compose(renderer, "review", lang, context("review", lang, renderer, request))))
    for body in (text, html):
        for value in ("Acme Widgets", "acme.example", "it-admin@acme.example", "ann@acme.example",
                      "bob@acme.example", "We set this up as agreed in our call.", "Welcome aboard.",
                      confirm, cancel, deadline):
            assert value in body
    labels = "|".join(re.escape(label) for label in FORM_LABELS["en"] + FORM_LABELS["de"])
    form_line = re.compile(rf"^\s*[•*-]?\s*({labels})\s*:", re.IGNORECASE | re.MULTILINE)
    assert form_line.search(text) is None, "a quoted review must never read as a new form"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_rejection_lists_each_problem_on_its_own_line_and_the_blank_form(renderer: Renderer, lang: str) -> None:
    text, html = parts(parse(compose(renderer, "rejection", lang, context("rejection", lang, renderer))))
    lines = text.splitlines()
    first, whole = PROBLEMS
    assert f"{first.label(lang)}: {first.message(lang)}" in lines
    assert whole.message(lang) in lines
    assert "it-admin@" in text and "it-admin@" in html           # the values as written
    assert renderer.blank_form(lang) in text.replace("\r\n", "\n")
    for label in FORM_LABELS[lang]:
        assert f"{label}: " in html


@pytest.mark.parametrize(("lang", "words"), [
    ("en", ["24 February 2027", "ACCEPT", "DECLINE", "sales@partner.example", "We set this up as agreed"]),
    ("de", ["24. Februar 2027", "AKZEPTIEREN", "ABLEHNEN", "sales@partner.example", "We set this up as agreed"]),
])
def test_activation_names_the_partner_the_note_the_expiry_and_the_keywords(
    renderer: Renderer, lang: str, words: list[str]
) -> None:
    text, html = parts(parse(compose(renderer, "activation", lang, context("activation", lang, renderer))))
    for body in (text, html):
        for word in words + ["Acme Widgets", "acme.example"]:
            assert word in body


@pytest.mark.parametrize(("lang", "expected"), [("en", "7 days left"), ("de", "noch 7 Tage")])
def test_reminder_counts_the_days_left(renderer: Renderer, lang: str, expected: str) -> None:
    text, html = parts(parse(compose(renderer, "reminder", lang, context("reminder", lang, renderer))))
    assert expected in text and expected in html


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("by_admin", [True, False])
@pytest.mark.parametrize("kind", ["cancelled_customer", "cancelled_partner"])
def test_cancellation_says_who_cancelled_and_why(renderer: Renderer, kind: str, by_admin: bool, lang: str) -> None:
    ctx = context(kind, lang, renderer) | {"by_admin": by_admin, "reason": "Duplicate of SA-000041"}
    text, html = parts(parse(compose(renderer, kind, lang, ctx)))
    admins = "administrators" if lang == "en" else "Administratoren"
    for body in (text, html):
        assert "Duplicate of SA-000041" in body
        assert (admins in body) == by_admin


@pytest.mark.parametrize(("lang", "words"), [
    ("en", {"awaiting_confirmation": "waiting for the partner's confirmation",
            "pending_acceptance": "waiting for the customer's acceptance", "active": "active",
            "rejected": "rejected", "expired": "expired", "declined": "declined",
            "cancelled": "cancelled", "lapsed": "lapsed"}),
    ("de", {"awaiting_confirmation": "wartet auf die Bestätigung des Partners",
            "pending_acceptance": "wartet auf die Annahme durch den Kunden", "active": "aktiv",
            "rejected": "abgewiesen", "expired": "abgelaufen", "declined": "abgelehnt",
            "cancelled": "storniert", "lapsed": "verfallen"}),
])
def test_status_puts_every_state_into_words(renderer: Renderer, lang: str, words: dict[str, str]) -> None:
    for state in STATES:
        request = RequestView(language=lang, state=state)
        msg = parse(compose(renderer, "status", lang, context("status", lang, renderer, request)))
        text, html = parts(msg)
        assert words[state] in msg["Subject"]
        assert words[state] in text and words[state] in html
        if "_" in state:
            assert state not in text, "the stored spelling is not for people"


@pytest.mark.parametrize(("lang", "state", "closing", "expected"), [
    ("en", "expired", {}, "expired on 24 February 2027"),
    ("en", "active", {"accepted_at": dt.datetime(2027, 1, 5, tzinfo=UTC)}, "already accepted on 5 January 2027"),
    ("en", "cancelled", {"closed_at": dt.datetime(2027, 1, 6, tzinfo=UTC)}, "cancelled on 6 January 2027"),
    ("en", "declined", {"closed_at": dt.datetime(2027, 1, 7, tzinfo=UTC)}, "declined on 7 January 2027"),
    ("en", "lapsed", {}, "lapsed on 8 December 2026"),
    ("de", "expired", {}, "am 24. Februar 2027 abgelaufen"),
    ("de", "active", {"accepted_at": dt.datetime(2027, 3, 5, tzinfo=UTC)}, "am 5. März 2027 zugestimmt"),
    ("de", "cancelled", {"closed_at": dt.datetime(2027, 1, 6, tzinfo=UTC)}, "am 6. Januar 2027 storniert"),
    ("de", "declined", {"closed_at": dt.datetime(2027, 1, 7, tzinfo=UTC)}, "am 7. Januar 2027 abgelehnt"),
    ("de", "lapsed", {}, "am 8. Dezember 2026 verfallen"),
])
def test_late_reply_explains_what_became_of_the_request(
    renderer: Renderer, lang: str, state: str, closing: dict[str, dt.datetime], expected: str
) -> None:
    request = replace(RequestView(language=lang, state=state), **closing)
    ctx = context("late_reply", lang, renderer, request)
    text, html = parts(parse(compose(renderer, "late_reply", lang, ctx, token=None)))
    assert expected in text and expected in html
    assert ctx["keyword"] in text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_delivery_failure_names_the_recipient_and_the_error(renderer: Renderer, lang: str) -> None:
    text, html = parts(parse(compose(renderer, "delivery_failed", lang, context("delivery_failed", lang, renderer))))
    for body in (text, html):
        assert "it-admin@acme.example" in body and "550 5.1.1 user unknown" in body


# --- the blank form --------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_blank_form_has_exactly_the_labels_in_order(renderer: Renderer, lang: str) -> None:
    form = renderer.blank_form(lang)
    lines = form.splitlines()
    assert lines[-len(FORM_LABELS[lang]):] == [f"{label}: " for label in FORM_LABELS[lang]]
    assert len([line for line in lines if line.strip()]) == len(FORM_LABELS[lang]) + 1   # one instruction
    word_lines = [line for line in lines if re.match(r"^[^\s:][^:]*:", line)]
    assert word_lines == [f"{label}: " for label in FORM_LABELS[lang]]
    assert "smart-accounts@example.com" in lines[0]


# --- values are data -------------------------------------------------------------------


def test_crlf_in_a_form_value_cannot_add_a_header(renderer: Renderer) -> None:
    request = RequestView(account_name="Acme\r\nBcc: evil@x.com\r\n\r\nbody")
    email = compose(renderer, "review", "en", context("review", "en", renderer, request))
    msg = parse(email)
    assert msg["Bcc"] is None
    assert "\r" not in msg["Subject"] and "\n" not in msg["Subject"]
    assert msg["Subject"] == "[SA-000042] Please review: Smart Account request for Acme Bcc: evil@x.com body"
    assert not re.search(r"^Bcc:", header_block(email.raw), re.MULTILINE | re.IGNORECASE)


def test_other_control_characters_in_a_subject_value_become_spaces(renderer: Renderer) -> None:
    request = RequestView(account_name="Acme\x00\x0b\x1b\u2028\u0085Widgets")
    msg = parse(compose(renderer, "activation", "en", context("activation", "en", renderer, request)))
    assert msg["Subject"] == "[SA-000042] Please accept the Smart Account Acme Widgets"


def test_a_long_german_subject_folds_and_decodes_unchanged(renderer: Renderer) -> None:
    request = RequestView(language="de", account_name="Müller & Söhne Gesellschaft für Ausrüstungsgegenstände mbH")
    email = compose(renderer, "review", "de", context("review", "de", renderer, request))
    assert all(len(line) <= 78 for line in header_block(email.raw).split("\r\n"))
    assert parse(email)["Subject"] == email.subject
    assert email.subject.endswith("Müller & Söhne Gesellschaft für Ausrüstungsgegenstände mbH")


def test_a_literal_encoded_word_in_a_value_stays_literal(renderer: Renderer) -> None:
    request = RequestView(account_name="=?utf-8?q?Evil?= Corp")
    msg = parse(compose(renderer, "activation", "en", context("activation", "en", renderer, request)))
    assert "=?utf-8?q?Evil?= Corp" in msg["Subject"]


def test_crlf_in_thread_ids_cannot_add_a_header(renderer: Renderer) -> None:
    email = compose(renderer, "review", "en", context("review", "en", renderer),
                    in_reply_to="<a@b.example>\r\nBcc: evil@x.com",
                    references=["<r@b.example>\r\nBcc: evil@x.com", "garbage", "<r@b.example>"])
    msg = parse(email)
    assert msg["Bcc"] is None
    assert msg["In-Reply-To"] == "<a@b.example>"
    assert msg["References"] == "<r@b.example> <evil@x.com> <a@b.example>"


def test_long_message_ids_thread_whole(renderer: Renderer) -> None:
    # Exchange's Message-IDs run to 90 characters: the stdlib folded them as encoded words, and the
    # answer never joined the thread. An id too long for one header line is dropped.
    exchange = "AM0PR02MB5678ABCDEF0123456789ABCDEF0123456789@AM0PR02MB5678.eurprd02.prod.outlook.com"
    fits = "a" * (980 - len("@x.example")) + "@x.example"
    email = compose(renderer, "review", "en", context("review", "en", renderer), in_reply_to=f"<{exchange}>",
                    references=[f"<{fits}>", f"<a{fits}>", f"<{exchange}>"])
    assert f"In-Reply-To: <{exchange}>\r\n".encode() in email.raw        # as it was written, no "=?"
    assert parse(email)["References"] == f"<{fits}> <{exchange}>"
    assert f"\r\n <{exchange}>\r\n".encode() in email.raw
    assert max(len(line) for line in email.raw.split(b"\r\n")) <= 998


def test_template_syntax_in_a_value_renders_literally(renderer: Renderer) -> None:
    request = RequestView(note_to_customer="{{ 7*7 }} and {% if true %}x{% endif %}")
    text, html = parts(parse(compose(renderer, "activation", "en", context("activation", "en", renderer, request))))
    for body in (text, html):
        assert "{{ 7*7 }} and {% if true %}x{% endif %}" in body
        assert "49" not in body


def test_html_values_are_escaped(renderer: Renderer) -> None:
    request = RequestView(account_name="<script>alert(1)</script>", note_to_customer='<b onclick="x">hi</b>')
    text, html = parts(parse(compose(renderer, "activation", "en", context("activation", "en", renderer, request))))
    assert "<script>" not in html and "<b onclick" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" in text            # the text part is not HTML


# --- addresses and ids -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    "a@x.com\r\nBcc: evil@x.com",
    "a@x.com\nb@y.com",
    "a@x.com, b@y.com",
    "a@x.com b@y.com",
    "Alice <a@x.com>",
    "no-at-sign",
    "a@",
    "",
])
def test_to_must_be_single_bare_addresses(renderer: Renderer, bad: str) -> None:
    with pytest.raises(ValueError):
        compose(renderer, "review", "en", context("review", "en", renderer), to=[bad])


def test_to_given_as_one_string_is_refused(renderer: Renderer) -> None:
    with pytest.raises(ValueError):
        compose(renderer, "review", "en", context("review", "en", renderer), to="a@x.com")


def test_international_domains_are_sent_as_a_labels(renderer: Renderer) -> None:
    email = compose(renderer, "activation", "de", context("activation", "de", renderer), to=["kunde@bücher.example"])
    assert email.to == ("kunde@xn--bcher-kva.example",)
    assert parse(email)["To"] == "kunde@xn--bcher-kva.example"


def test_a_non_ascii_local_part_makes_an_smtputf8_message(renderer: Renderer) -> None:
    email = compose(renderer, "activation", "de", context("activation", "de", renderer), to=["jörg@bücher.example"])
    assert email.to == ("jörg@xn--bcher-kva.example",)
    assert "To: jörg@xn--bcher-kva.example\r\n".encode() in email.raw
    assert parse(email)["To"] == "jörg@xn--bcher-kva.example"


@pytest.mark.parametrize("bad", ["two words@x", "a@b\r\nBcc: e@x", "<a@b> <c@d>", "no-at"])
def test_our_message_id_must_be_well_formed(renderer: Renderer, bad: str) -> None:
    with pytest.raises(ValueError):
        compose(renderer, "review", "en", context("review", "en", renderer), message_id=bad)


def test_reply_address_carries_the_token(renderer: Renderer) -> None:
    assert renderer.from_addr == "smart-accounts@example.com"
    assert renderer.reply_address(OTHER_TOKEN) == f"smart-accounts+{OTHER_TOKEN}@example.com"
    assert renderer.reply_address(None) == "smart-accounts@example.com"
    with pytest.raises(ValueError):
        renderer.reply_address("abc\r\nBcc: evil@x.com")


def test_from_address_must_be_one_address() -> None:
    with pytest.raises(ValueError):
        Renderer("a@example.com, b@example.com")
    with pytest.raises(ValueError):
        Renderer("Smart Accounts <smart-accounts@example.com>\r\nBcc: evil@x.com")


def test_auto_submitted_is_configurable_but_never_no(renderer: Renderer) -> None:
    email = compose(renderer, "reminder", "en", context("reminder", "en", renderer), auto_submitted="auto-generated")
    assert parse(email)["Auto-Submitted"] == "auto-generated"
    with pytest.raises(ValueError):
        compose(renderer, "reminder", "en", context("reminder", "en", renderer), auto_submitted="no")


def test_unknown_kind_language_or_naive_date_is_refused(renderer: Renderer) -> None:
    ctx = context("review", "en", renderer)
    with pytest.raises(ValueError):
        compose(renderer, "../form_en", "en", ctx)
    with pytest.raises(ValueError):
        compose(renderer, "review", "fr", ctx)
    with pytest.raises(ValueError):
        compose(renderer, "review", "en", ctx, date=dt.datetime(2026, 11, 24, 10, 0))


def test_no_threading_headers_for_a_fresh_email(renderer: Renderer) -> None:
    msg = parse(compose(renderer, "reminder", "en", context("reminder", "en", renderer),
                        in_reply_to=None, references=(), auto_submitted="auto-generated"))
    assert msg["In-Reply-To"] is None and msg["References"] is None


# --- one environment -------------------------------------------------------------------


def test_templates_are_compiled_once_and_shared(renderer: Renderer) -> None:
    compose(renderer, "review", "en", context("review", "en", renderer))
    env = renderer.environment
    text_template = env.get_template("en/review.txt.j2")
    html_template = env.get_template("en/review.html.j2")
    second = compose(renderer, "review", "en", context("review", "en", renderer), message_id="second@x.example")
    assert renderer.environment is env
    assert env.get_template("en/review.txt.j2") is text_template
    assert env.get_template("en/review.html.j2") is html_template
    assert parse(second)["Message-ID"] == "<second@x.example>"


# --- the message as the stdlib's EmailMessage wrote it, without its header parsing ----------------
#
# compose() writes the header fields and the two parts itself (issue 16: re-parsing headers we built
# was most of an email's cost). The reference below is the EmailMessage code it replaced; with the
# same random state (the MIME boundary) both must give the same bytes, for any values.


def stdlib_compose(renderer: Renderer, kind: str, lang: str, ctx: dict[str, Any], *, to: list[str],
                   message_id: str, date: dt.datetime, in_reply_to: str | None = None,
                   references: tuple[str, ...] | list[str] = (), token: str | None = None,
                   actions: tuple[str, ...] = (), auto_submitted: str = "auto-replied") -> bytes:
    from email.header import Header

    from daemon.mail.render import _folded_ids, _thread_ids, _trimmed, bare_address

    recipients = [bare_address(a) for a in to]
    subject, text, html = renderer._render(kind, lang, ctx, token, actions)
    parent = _thread_ids([in_reply_to] if in_reply_to else [])[:1]
    thread = _trimmed(_thread_ids([*references, *parent]))
    base = policy.SMTP if all(a.isascii() for a in recipients) else policy.SMTPUTF8
    msg = EmailMessage(policy=base.clone(refold_source="none"))
    msg["From"] = renderer._from
    msg["To"] = ", ".join(recipients)
    charset = "us-ascii" if subject.isascii() and "=?" not in subject else "utf-8"
    msg.set_raw("Subject", Header(subject, charset, maxlinelen=78, header_name="Subject").encode(linesep="\r\n"))
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = f"<{message_id}>"
    if parent:
        msg.set_raw("In-Reply-To", _folded_ids("In-Reply-To", parent))
    if thread:
        msg.set_raw("References", _folded_ids("References", thread))
    msg["Reply-To"] = renderer.reply_address(token)
    msg["Auto-Submitted"] = auto_submitted
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    msg["Content-Language"] = lang
    return msg.as_bytes()


def both(renderer: Renderer, kind: str, lang: str, ctx: dict[str, Any], seed: int = 7,
         **kwargs: Any) -> tuple[bytes, bytes]:
    args: dict[str, Any] = {"to": ["sales@partner.example"], "message_id": "sa.1.review@smartacct.example.com",
                            "date": SENT_AT, "in_reply_to": "CAFx1@mail.partner.example",
                            "references": ["root@mail.partner.example"], "token": TOKEN,
                            "actions": ("CONFIRM", "CANCEL")}
    args.update(kwargs)
    random.seed(seed)
    ours = renderer.compose(kind, lang, ctx, **args).raw
    random.seed(seed)
    return ours, stdlib_compose(renderer, kind, lang, ctx, **args)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_byte_for_byte_what_email_message_wrote(renderer: Renderer, kind: str, lang: str) -> None:
    for token in (TOKEN, None):
        ours, reference = both(renderer, kind, lang, context(kind, lang, renderer), token=token)
        assert ours == reference


FROMS = [FROM, "smart-accounts@example.com", '"Smart, Accounts" <sa@example.com>',
         "Smärt Äccounts <sa@example.com>", "Smart Accounts <sa@bücher.example>",
         "A Very Long Display Name For The Smart Accounts Team Of Example <smart-accounts@example.com>"]
_RENDERERS: dict[str, Renderer] = {}

_LOCAL = st.text(alphabet="abcXYZ09.!#$%&'*+/=?^_`{|}~-éß", min_size=1, max_size=70)
_DOMAIN = st.sampled_from(["x.example", "bücher.example", "a-b.c.example", "EXAMPLE.COM", "x" * 60 + ".example"])
_VALUE = st.one_of(st.text(max_size=300), st.text(alphabet=" \t=-.aé€\r\n", max_size=300),
                   st.text(alphabet=st.characters(max_codepoint=0x7f), max_size=200))
_OFFSET = st.integers(min_value=-14 * 3600, max_value=14 * 3600).map(lambda s: dt.timezone(dt.timedelta(seconds=s)))


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(KINDS), lang=st.sampled_from(LANGUAGES), sender=st.sampled_from(FROMS),
       name=_VALUE, note=_VALUE, users=_VALUE, local=_LOCAL, domain=_DOMAIN,
       when=st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=_OFFSET),
       ids=st.lists(st.text(alphabet="abc.-_@<> \r\nx" + "y" * 5, max_size=120), max_size=25),
       token=st.sampled_from([TOKEN, None]), seed=st.integers(0, 2**32))
def test_any_values_give_the_bytes_email_message_wrote(kind: str, lang: str, sender: str, name: str, note: str,
                                                       users: str, local: str, domain: str, when: dt.datetime,
                                                       ids: list[str], token: str | None, seed: int) -> None:
    renderer = _RENDERERS.setdefault(sender, Renderer(sender))
    request = RequestView(language=lang, account_name=name, note_to_customer=note, note_to_users=note[::-1],
                          user_emails=users.split())
    ctx = context(kind, lang, renderer, request)
    kwargs = {"to": [f"{local}@{domain}"], "date": when, "in_reply_to": ids[0] if ids else None,
              "references": ids[1:], "token": token, "actions": ("ACCEPT", "DECLINE") if token else ()}
    try:
        ours, reference = both(renderer, kind, lang, ctx, seed, **kwargs)
    except ValueError:      # a recipient bare_address refuses: refused alike, before any header is written
        with pytest.raises(ValueError):
            stdlib_compose(renderer, kind, lang, ctx, message_id="m@x.example", **kwargs)
        return
    assert ours == reference
    assert max(len(line) for line in ours.split(b"\r\n")) <= 998
    msg = message_from_bytes(ours, policy=policy.default)
    assert msg["Bcc"] is None and len(msg["To"].addresses) == 1


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(max_size=2000), st.text(alphabet=" \t=\r\n\x0b\x0c\x85\u2028aé€\U0001f600", max_size=600),
                      st.lists(st.text(alphabet="ab =\t", min_size=70, max_size=90), max_size=15).map("\n".join)))
def test_bodies_are_encoded_as_set_content_encodes_them(text: str) -> None:
    from daemon.mail.render import _encoded_body

    part = EmailMessage(policy=policy.SMTP)
    part.set_content(text, subtype="plain", charset="utf-8")
    head, _, body = part.as_bytes().partition(b"\r\n\r\n")
    cte, ours = _encoded_body(text)
    assert f"Content-Transfer-Encoding: {cte}".encode() in head
    assert ours == body


def test_a_boundary_already_in_the_text_is_never_used(renderer: Renderer) -> None:
    from daemon.mail.render import _boundary

    random.seed(3)
    taken = _boundary(b"")
    random.seed(3)
    assert _boundary(f"x\r\n--{taken}\r\n--{taken}.0--\r\ny".encode()) == f"{taken}.1"
    # A part sent as it is (7bit: short ASCII lines) holding the very boundary about to be drawn.
    from daemon.mail.render import _alternative

    random.seed(5)
    taken = _boundary(b"")
    text = "".join(f"--{taken}{suffix}\n" for suffix in ("", "--", ".0"))
    random.seed(5)
    raw = _alternative(b"Subject: x\r\n", text, "<p>hi</p>\n", "en")
    assert f'boundary="{taken}.1"'.encode() in raw
    msg = message_from_bytes(raw, policy=policy.default)
    assert [p.get_content().replace("\r\n", "\n") for p in msg.iter_parts()] == [text, "<p>hi</p>\n"]


def test_a_long_own_message_id_stays_on_one_line_or_is_refused(renderer: Renderer) -> None:
    own = "a" * 900 + "@smartacct.example.com"
    email = compose(renderer, "review", "en", context("review", "en", renderer), message_id=own)
    assert f"\r\nMessage-ID: <{own}>\r\n".encode() in email.raw
    assert parse(email)["Message-ID"] == f"<{own}>"
    with pytest.raises(ValueError):
        compose(renderer, "review", "en", context("review", "en", renderer), message_id="a" * 990 + "@x.example")


def test_crlf_cannot_reach_a_header_the_fast_path_writes(renderer: Renderer) -> None:
    """Every value written without the stdlib's header classes is checked before: CR/LF in any of them
    is refused or turned into a space, never written (DESIGN §3)."""
    request = RequestView(account_name="Acme\r\nBcc: evil@x.com")
    for kwargs in ({"to": ["a@x.example\r\nBcc: evil@x.com"]}, {"message_id": "m@x.example\r\nBcc: evil@x.com"},
                   {"token": "abc\r\nBcc: evil@x.com"}, {"auto_submitted": "auto-replied\r\nBcc: evil@x.com"}):
        with pytest.raises(ValueError):
            compose(renderer, "review", "en", context("review", "en", renderer, request), **kwargs)
    email = compose(renderer, "review", "en", context("review", "en", renderer, request))
    head = header_block(email.raw)
    assert not re.search(r"^Bcc:", head, re.MULTILINE | re.IGNORECASE)
    assert re.fullmatch(r"(?:[!-9;-~]+: [^\r\n]*|[ \t][^\r\n]*)(?:\r\n(?:[!-9;-~]+: [^\r\n]*|[ \t][^\r\n]*))*", head)
    with pytest.raises(ValueError):
        Renderer("Smart\r\nBcc: evil@x.com <sa@example.com>")
