"""parsers.form: the request form as people and mail clients actually write it (DESIGN §2)."""

from __future__ import annotations

import time
from email.message import EmailMessage

import pytest
from hypothesis import given, settings, strategies as st

from parsers.form import FIELDS, label, parse_form
from parsers.message import parse_message

FORM_EN = """\
Hello team,

please set up the following account.

Account Name: Müller Maschinenbau GmbH
Customer Email: anna.mueller@mueller.example
Account Domain: mueller.example
Note to Customer: Welcome aboard!
User Emails: bob@mueller.example, carol@mueller.example
Note to Added Users: You have been added.
Language: en

Thanks,
Pat
"""

FORM_DE = """\
Kontoname: Müller Maschinenbau GmbH
Kunden-E-Mail: anna.mueller@mueller.example
Kontodomäne: mueller.example
Hinweis für den Kunden: Willkommen!
Benutzer-E-Mails: bob@mueller.example
Hinweis für hinzugefügte Benutzer: Sie wurden hinzugefügt.
Sprache: de
"""


def test_english_form_gives_every_field() -> None:
    form = parse_form(FORM_EN)
    assert form.found
    assert form.label_language == "en"
    assert form.duplicates == ()
    assert form.fields == {
        "account_name": "Müller Maschinenbau GmbH",
        "customer_email": "anna.mueller@mueller.example",
        "account_domain": "mueller.example",
        "note_to_customer": "Welcome aboard!",
        "user_emails": "bob@mueller.example, carol@mueller.example",
        "note_to_users": "You have been added.",
        "language": "en",
    }


def test_german_form_gives_every_field() -> None:
    form = parse_form(FORM_DE)
    assert form.label_language == "de"
    assert form.fields["account_domain"] == "mueller.example"
    assert form.fields["note_to_customer"] == "Willkommen!"
    assert form.fields["note_to_users"] == "Sie wurden hinzugefügt."
    assert form.fields["language"] == "de"
    assert set(form.fields) == {f.name for f in FIELDS}


def test_labels_table_spells_the_contract_labels() -> None:
    assert [(f.name, f.en, f.de) for f in FIELDS] == [
        ("account_name", "Account Name", "Kontoname"),
        ("customer_email", "Customer Email", "Kunden-E-Mail"),
        ("account_domain", "Account Domain", "Kontodomäne"),
        ("note_to_customer", "Note to Customer", "Hinweis für den Kunden"),
        ("user_emails", "User Emails", "Benutzer-E-Mails"),
        ("note_to_users", "Note to Added Users", "Hinweis für hinzugefügte Benutzer"),
        ("language", "Language", "Sprache"),
    ]
    assert [f.name for f in FIELDS if f.required] == ["account_name", "customer_email", "account_domain"]
    assert label("customer_email", "de") == "Kunden-E-Mail"
    assert label("account_domain", "en") == "Account Domain"


def test_the_blank_forms_own_labels_round_trip() -> None:
    for lang in ("en", "de"):
        text = "\n".join(f"{label(f.name, lang)}: v-{f.name}" for f in FIELDS)
        form = parse_form(text)
        assert form.label_language == lang
        assert form.fields == {f.name: f"v-{f.name}" for f in FIELDS}


@pytest.mark.parametrize("line", [
    "• Account Name: Acme",
    "- Account Name: Acme",
    "* Account Name: Acme",
    "· Account Name: Acme",
    "– Account Name: Acme",
    "   •   Account Name   :   Acme   ",
    "\tAccount Name:\tAcme",
    "1. Account Name: Acme",
    "ACCOUNT NAME: Acme",
    "account name: Acme",
    "AccOunt NaMe: Acme",
    "Account Name： Acme",
    "Account\u00a0Name: Acme",
    "Account-Name: Acme",
    "**Account Name:** Acme",
    "**Account Name**: Acme",
    "* **Account Name:** Acme",
    "__Account Name:__ Acme",
    "Account Name (required): Acme",
    "\ufeffAccount Name: Acme",
    "Account\u200b Name: Acme",
])
def test_label_variants_are_recognised(line: str) -> None:
    assert parse_form(line).fields == {"account_name": "Acme"}


@pytest.mark.parametrize(("line", "field"), [
    ("Customer E-mail: a@b.example", "customer_email"),
    ("Customer E-Mail: a@b.example", "customer_email"),
    ("Customer email: a@b.example", "customer_email"),
    ("Kunden E-Mail: a@b.example", "customer_email"),
    ("Kunden-Email: a@b.example", "customer_email"),
    ("KUNDEN-E-MAIL: a@b.example", "customer_email"),
    ("Kontodomaene: b.example", "account_domain"),
    ("Kontodomane: b.example", "account_domain"),
    ("Kontodomäne: b.example", "account_domain"),
    ("Kontodoma\u0308ne: b.example", "account_domain"),     # decomposed umlaut
    ("Hinweis fuer den Kunden: hi", "note_to_customer"),
    ("Hinweis fur hinzugefugte Benutzer: hi", "note_to_users"),
    ("User E-mails: a@b.example", "user_emails"),
    ("User Email: a@b.example", "user_emails"),
    ("Benutzer E-Mails: a@b.example", "user_emails"),
])
def test_spelling_variants_map_to_the_field(line: str, field: str) -> None:
    assert parse_form(line).fields == {field: line.split(":", 1)[1].strip()}


@pytest.mark.parametrize("line", [
    "Account: Acme",
    "Name: Acme",
    "Account Names: Acme",
    "The Account Name: Acme",
    "Account Name Acme",
    "Subject: Account Name: Acme",
])
def test_lookalikes_are_not_labels(line: str) -> None:
    assert not parse_form(line).found


def test_no_labels_means_no_form() -> None:
    form = parse_form("Hi, can you set up an account for Acme? Thanks!\n-- \nPat")
    assert not form.found
    assert form.label_language is None
    assert form.fields == {}
    assert not parse_form("").found


def test_value_may_start_on_the_next_line() -> None:
    form = parse_form("Account Name:\nAcme Corp\nCustomer Email:\n  a@acme.example\nAccount Domain:\nacme.example\n")
    assert form.fields == {
        "account_name": "Acme Corp",
        "customer_email": "a@acme.example",
        "account_domain": "acme.example",
    }


def test_multi_line_values_are_joined_with_newlines() -> None:
    text = (
        "Note to Customer: Dear Anna,\n"
        "  we set this up for you.\n"
        "Best, the partner team\n"
        "User Emails:\n"
        "bob@acme.example\n"
        "carol@acme.example;\n"
        "Account Name: Acme\n"
    )
    form = parse_form(text)
    assert form.fields["note_to_customer"] == "Dear Anna,\nwe set this up for you.\nBest, the partner team"
    assert form.fields["user_emails"] == "bob@acme.example\ncarol@acme.example;"
    assert form.fields["account_name"] == "Acme"


def test_continuation_lines_that_look_like_other_labels_stay_in_the_value() -> None:
    form = parse_form("Note to Customer: Agenda:\nTime: 10am\nPlace: online\n")
    assert form.fields == {"note_to_customer": "Agenda:\nTime: 10am\nPlace: online"}


@pytest.mark.parametrize("stop", ["", "   ", "\t", "-- ", "--", "> quoted"])
def test_continuation_stops_at_blank_signature_and_quote(stop: str) -> None:
    form = parse_form(f"Note to Customer: first\nsecond\n{stop}\nnot part of it\n")
    assert form.fields == {"note_to_customer": "first\nsecond"}


def test_signature_after_a_blank_line_is_not_swallowed() -> None:
    text = "Account Name: Acme\nNote to Added Users: Welcome\n\nBest regards\nPat Partner\nPartner Ltd\n"
    assert parse_form(text).fields == {"account_name": "Acme", "note_to_users": "Welcome"}


def test_signature_after_separator_is_not_swallowed() -> None:
    text = "Account Name: Acme\nNote to Added Users: Welcome\n-- \nPat Partner\nPhone: +49 1234\n"
    assert parse_form(text).fields == {"account_name": "Acme", "note_to_users": "Welcome"}


def test_signature_right_below_a_one_line_field_is_not_swallowed() -> None:
    text = "Account Domain: acme.example\nLanguage: de\nMit freundlichen Grüßen\nPat\n"
    assert parse_form(text).fields == {"account_domain": "acme.example", "language": "de"}


def test_one_line_fields_take_only_one_line() -> None:
    text = "Customer Email:\nanna@acme.example\nbob@acme.example\n"
    assert parse_form(text).fields == {"customer_email": "anna@acme.example"}


def test_quoted_lines_are_never_form_lines() -> None:
    text = (
        "Account Name: New Corp\n"
        "\n"
        "On Monday Smart Accounts wrote:\n"
        "> Account Name: Old Corp\n"
        ">> Customer Email: old@old.example\n"
        "  > Account Domain: old.example\n"
    )
    form = parse_form(text)
    assert form.fields == {"account_name": "New Corp"}
    assert form.duplicates == ()


def test_crlf_and_bare_cr_line_endings() -> None:
    text = FORM_EN.replace("\n", "\r\n")
    assert parse_form(text).fields == parse_form(FORM_EN).fields
    old_mac = "Account Name: Acme\rNote to Customer: a\rb\r\rsignature"
    assert parse_form(old_mac).fields == {"account_name": "Acme", "note_to_customer": "a\nb"}


def test_values_are_kept_as_written_apart_from_outer_whitespace() -> None:
    form = parse_form("Account Name:   Acme  &  Co.  KG \t\nLanguage: DE\n")
    assert form.fields == {"account_name": "Acme  &  Co.  KG", "language": "DE"}


def test_a_different_second_value_is_a_duplicate_and_the_first_is_kept() -> None:
    form = parse_form("Account Name: First\nKontoname: Second\nAccount Name: Third\nAccount Domain: a.example\n")
    assert form.fields["account_name"] == "First"
    assert form.duplicates == ("account_name",)


def test_repeating_the_same_value_or_an_empty_label_is_not_a_duplicate() -> None:
    form = parse_form("Account Name:\n\nAccount Name: Acme\nAccount Name: Acme\nAccount Name:\n")
    assert form.fields == {"account_name": "Acme"}
    assert form.duplicates == ()


def test_duplicate_multi_line_value_is_consumed_not_leaked() -> None:
    form = parse_form("Note to Customer: one\nNote to Customer: two\nmore two\nLanguage: en\n")
    assert form.fields == {"note_to_customer": "one", "language": "en"}
    assert form.duplicates == ("note_to_customer",)


def test_empty_field_is_present_with_empty_value() -> None:
    form = parse_form("Account Name:\n\nCustomer Email: a@b.example\n")
    assert form.found
    assert form.fields == {"account_name": "", "customer_email": "a@b.example"}


def test_label_language_is_the_majority_of_labels() -> None:
    mostly_german = "Kontoname: A\nKunden-E-Mail: a@b.example\nAccount Domain: b.example\n"
    assert parse_form(mostly_german).label_language == "de"
    mostly_english = "Account Name: A\nCustomer Email: a@b.example\nKontodomäne: b.example\n"
    assert parse_form(mostly_english).label_language == "en"
    assert parse_form("Sprache: en\n").label_language == "de"     # the labels, not the value
    assert parse_form("Kontoname: A\nAccount Domain: b.example\n").label_language == "de"  # tie: first label


def test_forwarded_form_is_found_but_a_quoted_original_below_a_form_is_not_read() -> None:
    forwarded = (
        "FYI, see below.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Colleague <c@partner.example>\n\n"
        "Account Name: Acme\nAccount Domain: acme.example\n"
    )
    assert parse_form(forwarded).fields == {"account_name": "Acme", "account_domain": "acme.example"}
    outlook_reply = (
        "Account Name: New Corp\n\n"
        "-----Original Message-----\n"
        "From: Smart Accounts\n"
        "Account Name: Old Corp\nAccount Domain: old.example\n"
    )
    form = parse_form(outlook_reply)
    assert form.fields == {"account_name": "New Corp"}
    assert form.duplicates == ()


def test_zero_width_and_tabs_do_not_hide_labels_or_blank_lines() -> None:
    text = "\ufeff\u200bAccount Name:\tAcme\nNote to Customer: hi\n\u200b \u200d\nsignature line\n"
    assert parse_form(text).fields == {"account_name": "Acme", "note_to_customer": "hi"}


def test_megabytes_of_hostile_text_parse_quickly() -> None:
    shapes = [
        "x" * 2_000_000,
        ":" * 2_000_000,
        ("- " * 40 + ":\n") * 20_000,
        ("*" * 79 + ":") * 20_000,
        ("Note to Customer: " + "a" * 50 + "\n") * 30_000,
        "Note to Customer: start\n" + "line of text\n" * 150_000,
        " " * 1_000_000 + "Account Name: x",
        ("1. " * 30 + "Account Name:\n") * 20_000,
        ("(" * 70 + ":\n") * 20_000,
    ]
    for text in shapes:
        start = time.perf_counter()
        parse_form(text)
        assert time.perf_counter() - start < 2.0


_line = st.one_of(
    st.text(max_size=60),
    st.sampled_from([f.en for f in FIELDS] + [f.de for f in FIELDS]).map(lambda lbl: f"{lbl}: "),
    st.sampled_from(["", "-- ", "--", "> quoted", ">", "• Account Name:", "**Sprache:**"]),
)


@settings(max_examples=300, deadline=1000)
@given(st.lists(st.tuples(_line, st.text(max_size=30)), max_size=40), st.sampled_from(["\n", "\r\n", "\r"]))
def test_parse_form_never_raises_and_never_takes_quoted_lines(pieces: list[tuple[str, str]], eol: str) -> None:
    text = eol.join(head + tail for head, tail in pieces)
    form = parse_form(text)
    assert form.found == (form.label_language is not None)
    assert set(form.duplicates) <= set(form.fields)
    for value in form.fields.values():
        assert value == value.strip()
        # The first line is whatever followed the label; every further line
        # came from a continuation line, and a quoted line never continues a value.
        for line in value.split("\n")[1:]:
            assert not line.startswith(">")


@settings(max_examples=200, deadline=1000)
@given(st.text())
def test_parse_form_never_raises_on_arbitrary_text(text: str) -> None:
    parse_form(text)


@settings(max_examples=100, deadline=1000)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=40))
def test_quoted_marker_never_reaches_a_value(secret: str) -> None:
    text = f"Note to Customer: visible\n> {secret}QUOTED\nAccount Name: Acme\n> QUOTED{secret}\n"
    for value in parse_form(text).fields.values():
        assert "QUOTED" not in value


# --- end to end through real MIME (parsers.message) -------------------------

def _mime(body: str, subtype: str = "plain", charset: str = "utf-8", cte: str = "quoted-printable") -> bytes:
    message = EmailMessage()
    message["From"] = "Pat Partner <pat@partner.example>"
    message["To"] = "smart-accounts@example.com"
    message["Subject"] = "Smart Account request"
    message.set_content(body, subtype=subtype, charset=charset, cte=cte)
    return bytes(message)


@pytest.mark.parametrize(("charset", "cte"), [("utf-8", "quoted-printable"), ("utf-8", "base64"), ("iso-8859-1", "8bit")])
def test_form_in_a_plain_text_mime_part(charset: str, cte: str) -> None:
    parsed = parse_message(_mime(FORM_DE, charset=charset, cte=cte))
    form = parse_form(parsed.text)
    assert form.label_language == "de"
    assert form.fields == parse_form(FORM_DE).fields


def test_form_in_an_html_only_email() -> None:
    html = (
        "<html><body><p>Hello,</p><ul>"
        "<li><b>Account Name:</b> Acme &amp; Co</li>"
        "<li><strong>Customer Email:</strong> <a href='mailto:anna@acme.example'>anna@acme.example</a></li>"
        "<li>Account Domain:<br>acme.example</li>"
        "</ul><p>Language: de</p><p>Regards,<br>Pat</p></body></html>"
    )
    form = parse_form(parse_message(_mime(html, subtype="html")).text)
    assert form.fields == {
        "account_name": "Acme & Co",
        "customer_email": "anna@acme.example",
        "account_domain": "acme.example",
        "language": "de",
    }


def test_quoted_reply_in_mime_keeps_only_the_new_form() -> None:
    body = "Account Name: New Corp\r\n\r\nOn Mon, Smart Accounts wrote:\r\n> Account Name: Old Corp\r\n"
    form = parse_form(parse_message(_mime(body)).text)
    assert form.fields == {"account_name": "New Corp"}
