"""parsers.validate: every rule of DESIGN §2, every problem reported at once."""

from __future__ import annotations

import time

import pytest

from parsers.form import FIELDS, FormResult, parse_form
from parsers.validate import MESSAGES, Problem, ValidRequest, request_language, validate

GOOD = {
    "account_name": "Müller Maschinenbau GmbH",
    "customer_email": "Anna.Mueller@Mueller.Example",
    "account_domain": "mueller.example",
}


def form(**fields: str) -> FormResult:
    """A form as parse_form returns it, with English labels."""
    return FormResult(fields=fields, label_language="en", duplicates=())


def labelled(label_language: str | None, **fields: str) -> FormResult:
    return FormResult(fields=fields, label_language=label_language, duplicates=())


def check(
    result_form: FormResult,
    *,
    max_users: int = 50,
    require_customer_in_domain: bool = True,
    default_language: str = "en",
    taken: dict[str, str] | None = None,
) -> ValidRequest | list[Problem]:
    taken = taken or {}
    return validate(
        result_form,
        max_users=max_users,
        require_customer_in_domain=require_customer_in_domain,
        default_language=default_language,
        open_ref_for_domain=taken.get,
    )


def ok(result_form: FormResult, **kwargs: object) -> ValidRequest:
    result = check(result_form, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, ValidRequest), result
    return result


def problems(result_form: FormResult, **kwargs: object) -> list[tuple[str | None, str]]:
    result = check(result_form, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, list), result
    return [(p.field, p.code) for p in result]


def only_problem(result_form: FormResult, **kwargs: object) -> Problem:
    result = check(result_form, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, list) and len(result) == 1, result
    return result[0]


# --- a good form ----------------------------------------------------------

def test_minimal_valid_form_is_normalised() -> None:
    request = ok(form(**GOOD))
    assert request == ValidRequest(
        account_name="Müller Maschinenbau GmbH",
        customer_email="anna.mueller@mueller.example",
        account_domain="mueller.example",
        note_to_customer="",
        user_emails=(),
        note_to_users="",
        language="en",
    )


def test_full_form_parsed_from_text() -> None:
    text = (
        "Kontoname: Müller GmbH\n"
        "Kunden-E-Mail: Anna Müller <anna@vertrieb.müller.example>\n"
        "Kontodomäne: MÜLLER.example\n"
        "Hinweis für den Kunden: Willkommen,\nbitte bestätigen.\n"
        "Benutzer-E-Mails: bob@müller.example; carol@müller.example\n  BOB@müller.example\n"
        "Hinweis für hinzugefügte Benutzer: Hallo!\n"
    )
    request = ok(parse_form(text))
    assert request.account_domain == "müller.example"
    assert request.customer_email == "anna@vertrieb.müller.example"
    assert request.note_to_customer == "Willkommen,\nbitte bestätigen."
    assert request.user_emails == ("bob@müller.example", "carol@müller.example")
    assert request.note_to_users == "Hallo!"
    assert request.language == "de"


# --- no form, missing, duplicates ------------------------------------------

def test_no_form() -> None:
    result = check(parse_form("Hi, please set up an account for Acme."))
    assert result == [Problem(None, "no_form")]
    assert result[0].label("en") == "" and result[0].label("de") == ""


def test_all_required_fields_missing() -> None:
    assert problems(form(language="en")) == [
        ("account_name", "missing"),
        ("customer_email", "missing"),
        ("account_domain", "missing"),
    ]


def test_empty_and_blank_required_fields_are_missing() -> None:
    assert problems(form(account_name="", customer_email="  ", account_domain="\n")) == [
        ("account_name", "missing"),
        ("customer_email", "missing"),
        ("account_domain", "missing"),
    ]


def test_duplicates_become_problems() -> None:
    duplicated = FormResult(fields=dict(GOOD), label_language="en", duplicates=("account_domain", "account_name"))
    assert problems(duplicated) == [
        ("account_name", "duplicate_field"),
        ("account_domain", "duplicate_field"),
    ]


# --- account name ---------------------------------------------------------

def test_account_name_length_bounds() -> None:
    assert ok(form(**{**GOOD, "account_name": "AB"})).account_name == "AB"
    assert ok(form(**{**GOOD, "account_name": "x" * 100})).account_name == "x" * 100
    assert only_problem(form(**{**GOOD, "account_name": "A"})) == Problem("account_name", "too_short", (("min", "2"),))
    assert only_problem(form(**{**GOOD, "account_name": "x" * 101})) == Problem(
        "account_name", "too_long", (("max", "100"), ("length", "101")))


def test_account_name_control_characters() -> None:
    assert problems(form(**{**GOOD, "account_name": "Acme\x00Corp"})) == [("account_name", "control_characters")]
    assert problems(form(**{**GOOD, "account_name": "Acme\x1b[31m"})) == [("account_name", "control_characters")]


def test_account_name_wrapped_by_the_mail_client_is_joined() -> None:
    assert ok(form(**{**GOOD, "account_name": "Very Long\nCompany\tName"})).account_name == "Very Long Company Name"


# --- customer email -------------------------------------------------------

@pytest.mark.parametrize(("written", "stored"), [
    ("anna@mueller.example", "anna@mueller.example"),
    ("ANNA@MUELLER.EXAMPLE", "anna@mueller.example"),
    ("Anna Müller <anna@mueller.example>", "anna@mueller.example"),
    ('"Müller, Anna" <anna@mueller.example>', "anna@mueller.example"),
    ("<anna@mueller.example>", "anna@mueller.example"),
    ("mailto:anna@mueller.example", "anna@mueller.example"),
    ("anna@mueller.example<mailto:anna@mueller.example>", "anna@mueller.example"),
    ("[anna@mueller.example](mailto:anna@mueller.example)", "anna@mueller.example"),
    ("anna@sales.mueller.example", "anna@sales.mueller.example"),
    ("anna@a.b.mueller.example", "anna@a.b.mueller.example"),
])
def test_customer_email_forms_accepted(written: str, stored: str) -> None:
    assert ok(form(**{**GOOD, "customer_email": written})).customer_email == stored


@pytest.mark.parametrize("written", [
    "anna@mueller.example, bob@mueller.example",
    "anna@mueller.example bob@mueller.example",
    "anna@mueller.example;bob@mueller.example",
    "anna@mueller.example\nbob@mueller.example",
    "Anna <anna@mueller.example>, Bob <bob@mueller.example>",
])
def test_customer_email_must_be_one_address(written: str) -> None:
    assert only_problem(form(**{**GOOD, "customer_email": written})) == Problem(
        "customer_email", "multiple_emails", (("count", "2"),))


@pytest.mark.parametrize(("written", "reason"), [
    ("anna", "the @ sign is missing"),
    ("@mueller.example", "nothing before the @ sign"),
    ("anna@", "nothing after the @ sign"),
    ("anna@@mueller.example", "it contains invalid characters"),
    ("anna..m@mueller.example", "misplaced dot"),
    ("anna@mueller", "the domain has no dot"),
    ("anna@mueller.test", "the domain is reserved and cannot receive email"),
    ("anna@mueller.localhost", "the domain is reserved and cannot receive email"),
    ("anna@[192.0.2.1]", "a bracketed IP address is not allowed"),
])
def test_customer_email_invalid(written: str, reason: str) -> None:
    result = check(form(**{**GOOD, "customer_email": written}))
    assert isinstance(result, list)
    assert result == [Problem("customer_email", "invalid_email", (("address", written), ("reason", reason)))]


def test_customer_email_with_words_around_it_is_invalid() -> None:
    assert problems(form(**{**GOOD, "customer_email": "Anna Mueller anna@mueller.example"})) == [
        ("customer_email", "invalid_email")]


def test_customer_outside_the_account_domain() -> None:
    for address in ("anna@other.example", "anna@notmueller.example", "anna@mueller.example.com"):
        assert only_problem(form(**{**GOOD, "customer_email": address})) == Problem(
            "customer_email", "customer_not_in_domain", (("domain", "mueller.example"),))


def test_customer_outside_the_domain_is_fine_when_not_required() -> None:
    request = ok(form(**{**GOOD, "customer_email": "anna@other.example"}), require_customer_in_domain=False)
    assert request.customer_email == "anna@other.example"


def test_customer_in_domain_compares_idna_forms() -> None:
    assert ok(form(account_name="Müller", customer_email="anna@xn--mller-kva.example",
                   account_domain="müller.example")).customer_email == "anna@müller.example"
    assert ok(form(account_name="Müller", customer_email="anna@vertrieb.MÜLLER.example",
                   account_domain="xn--mller-kva.example")).account_domain == "müller.example"


# --- account domain -------------------------------------------------------

@pytest.mark.parametrize(("written", "stored"), [
    ("mueller.example", "mueller.example"),
    ("MUELLER.Example", "mueller.example"),
    ("müller.example", "müller.example"),
    ("MÜLLER.EXAMPLE", "müller.example"),
    ("xn--mller-kva.example", "müller.example"),
    ("XN--MLLER-KVA.EXAMPLE", "müller.example"),
    ("mueller.example.", "mueller.example"),
    ("partner.example.com", "partner.example.com"),
    ("example.org", "example.org"),
    ("日本.example", "日本.example"),
])
def test_account_domain_accepted_and_stored_lower_case_unicode(written: str, stored: str) -> None:
    customer = "anna@" + stored
    assert ok(form(account_name="Acme", customer_email=customer, account_domain=written)).account_domain == stored


@pytest.mark.parametrize(("written", "reason"), [
    ("https://mueller.example", "it includes a scheme such as https://"),
    ("mueller.example/path", "it includes a path"),
    ("mueller.example:8443", "it includes a port"),
    ("anna@mueller.example", "it includes an @ sign; give the domain only"),
    ("mueller example", "it contains spaces"),
    ("mueller", "it needs at least two labels, such as example.com"),
    ("mueller..example", "it has an empty label"),
    ("-mueller.example", "a label starts or ends with a hyphen"),
    ("mu_eller.example", "it contains invalid characters"),
    ("x" * 64 + ".example", "a label is too long"),
    ("192.0.2.1", "it is an IP address"),
    ("mueller.123", "the domain has an invalid top-level domain"),
    ("mueller.test", "the domain is reserved and cannot receive email"),
    ("mueller.localhost", "the domain is reserved and cannot receive email"),
    ("xn--zz.example", "it is not a valid international domain name"),
])
def test_account_domain_invalid(written: str, reason: str) -> None:
    result = check(form(account_name="Acme", customer_email="anna@mueller.example", account_domain=written))
    assert isinstance(result, list)
    assert result == [Problem("account_domain", "invalid_domain", (("domain", written), ("reason", reason)))]


def test_domain_taken_names_the_existing_request() -> None:
    asked: list[str] = []

    def lookup(domain: str) -> str | None:
        asked.append(domain)
        return "SA-000042" if domain == "müller.example" else None

    result = validate(form(account_name="Müller", customer_email="a@müller.example", account_domain="XN--MLLER-KVA.example"),
                      max_users=50, require_customer_in_domain=True, default_language="en", open_ref_for_domain=lookup)
    assert result == [Problem("account_domain", "domain_taken", (("ref", "SA-000042"),))]
    assert asked == ["müller.example"]


def test_domain_lookup_is_skipped_for_an_invalid_domain() -> None:
    asked: list[str] = []

    def lookup(domain: str) -> str | None:
        asked.append(domain)
        return None

    validate(form(account_domain="https://x.example/"), max_users=50, require_customer_in_domain=True,
             default_language="en", open_ref_for_domain=lookup)
    assert asked == []


# --- notes ----------------------------------------------------------------

@pytest.mark.parametrize("field", ["note_to_customer", "note_to_users"])
def test_notes_are_optional_and_at_most_1000_characters(field: str) -> None:
    assert getattr(ok(form(**GOOD, **{field: "ä" * 1000})), field) == "ä" * 1000
    assert only_problem(form(**GOOD, **{field: "x" * 1001})) == Problem(
        field, "too_long", (("max", "1000"), ("length", "1001")))


@pytest.mark.parametrize("field", ["note_to_customer", "note_to_users"])
def test_notes_keep_lines_but_not_control_characters(field: str) -> None:
    assert getattr(ok(form(**GOOD, **{field: "Line one\n\tLine two"})), field) == "Line one\n\tLine two"
    assert problems(form(**GOOD, **{field: "bell\x07"})) == [(field, "control_characters")]


# --- user emails ----------------------------------------------------------

def test_user_emails_separators_and_duplicates() -> None:
    written = "a@mueller.example, b@mueller.example;c@mueller.example d@mueller.example\n\tA@MUELLER.example,,"
    assert ok(form(**GOOD, user_emails=written)).user_emails == (
        "a@mueller.example", "b@mueller.example", "c@mueller.example", "d@mueller.example")


def test_user_emails_may_be_anywhere_and_carry_names() -> None:
    written = 'Bob <bob@other.example>, "Smith, Carol" <carol@third.example>\nbob@OTHER.example'
    assert ok(form(**GOOD, user_emails=written)).user_emails == ("bob@other.example", "carol@third.example")


def test_each_bad_user_email_is_reported() -> None:
    result = check(form(**GOOD, user_emails="ok@mueller.example, nope, also@bad@x.example, z@mueller.test"))
    assert isinstance(result, list)
    assert [(p.code, dict(p.params)["address"]) for p in result] == [
        ("invalid_email", "nope"), ("invalid_email", "also@bad@x.example"), ("invalid_email", "z@mueller.test")]


def test_too_many_users_counts_after_dropping_duplicates() -> None:
    three = "a@x.example, b@x.example, c@x.example, A@x.example"
    assert ok(form(**GOOD, user_emails=three), max_users=3).user_emails == ("a@x.example", "b@x.example", "c@x.example")
    assert only_problem(form(**GOOD, user_emails=three), max_users=2) == Problem(
        "user_emails", "too_many_users", (("max", "2"), ("count", "3")))


def test_a_huge_pasted_list_is_too_many_without_listing_each_entry() -> None:
    pasted = ", ".join(f"user{i}@x.example" for i in range(5000))
    assert only_problem(form(**GOOD, user_emails=pasted)) == Problem(
        "user_emails", "too_many_users", (("max", "50"), ("count", "5000")))


# --- language -------------------------------------------------------------

@pytest.mark.parametrize(("written", "lang"), [
    ("en", "en"), ("EN", "en"), ("English", "en"), ("englisch", "en"), ("en-GB", "en"),
    ("de", "de"), ("DE", "de"), ("Deutsch", "de"), ("German", "de"), ("de_AT", "de"),
])
def test_language_values(written: str, lang: str) -> None:
    assert ok(labelled("en", **GOOD, language=written)).language == lang
    assert request_language(labelled("de", language=written), "en") == lang


@pytest.mark.parametrize("written", ["fr", "Français", "e n", "en-", "deutsch!"])
def test_invalid_language(written: str) -> None:
    assert only_problem(form(**GOOD, language=written)) == Problem("language", "invalid_language", (("value", written),))


def test_language_defaults_to_the_labels_then_the_configured_default() -> None:
    assert ok(labelled("de", **GOOD)).language == "de"
    assert ok(labelled("en", **GOOD), default_language="de").language == "en"
    assert ok(labelled("de", **GOOD, language="")).language == "de"
    assert request_language(labelled(None), "de") == "de"
    assert request_language(labelled("de", language="klingon"), "en") == "de"


# --- everything at once ---------------------------------------------------

def test_every_field_wrong_reports_every_problem_in_form_order() -> None:
    text = (
        "Account Name: A\n"
        "Account Name: B\n"
        "Customer Email: not-an-address\n"
        "Account Domain: https://acme.example/\n"
        "Note to Customer: " + "x" * 1001 + "\n"
        "User Emails: a@x.example, b@x.example, broken@\n"
        "Note to Added Users: \x01" + "y" * 1001 + "\n"
        "Language: fr\n"
    )
    assert problems(parse_form(text), max_users=1) == [
        ("account_name", "duplicate_field"),
        ("account_name", "too_short"),
        ("customer_email", "invalid_email"),
        ("account_domain", "invalid_domain"),
        ("note_to_customer", "too_long"),
        ("user_emails", "invalid_email"),
        ("user_emails", "too_many_users"),
        ("note_to_users", "control_characters"),
        ("note_to_users", "too_long"),
        ("language", "invalid_language"),
    ]


def test_domain_taken_and_customer_outside_domain_together() -> None:
    assert problems(form(account_name="Acme", customer_email="a@other.example", account_domain="acme.example"),
                    taken={"acme.example": "SA-000007"}) == [
        ("customer_email", "customer_not_in_domain"),
        ("account_domain", "domain_taken"),
    ]


def test_long_user_text_is_shortened_in_problems() -> None:
    problem = only_problem(form(account_name="Acme", customer_email="a@acme.example", account_domain="x" * 5000))
    assert len(dict(problem.params)["domain"]) <= 80
    assert len(problem.message("en")) < 300


# --- messages -------------------------------------------------------------

SAMPLE_PARAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "too_short": (("min", "2"),),
    "too_large": (("max", "25 MB"),),
    "too_long": (("max", "100"), ("length", "123")),
    "invalid_email": (("address", "nope"), ("reason", "the @ sign is missing")),
    "multiple_emails": (("count", "2"),),
    "invalid_domain": (("domain", "https://x.example"), ("reason", "it includes a scheme such as https://")),
    "customer_not_in_domain": (("domain", "müller.example"),),
    "too_many_users": (("max", "50"), ("count", "51")),
    "invalid_language": (("value", "fr"),),
    "domain_taken": (("ref", "SA-000042"),),
}
CODES = [
    "no_form", "missing", "duplicate_field", "too_short", "too_long", "control_characters", "invisible_characters",
    "invalid_email", "multiple_emails", "invalid_domain", "customer_not_in_domain",
    "too_many_users", "invalid_language", "domain_taken", "too_large",
]


def test_the_code_list_is_complete() -> None:
    assert sorted(MESSAGES) == sorted(CODES)


@pytest.mark.parametrize("code", CODES)
def test_every_code_has_an_english_and_a_german_message_using_its_params(code: str) -> None:
    field = None if code in ("no_form", "too_large") else "account_name"
    problem = Problem(field, code, SAMPLE_PARAMS.get(code, ()))
    english, german = problem.message("en"), problem.message("de")
    assert english and german and english != german
    assert "{" not in english + german
    for _, value in problem.params:
        if value not in ("the @ sign is missing", "it includes a scheme such as https://"):
            assert value in english and value in german


def test_messages_read_naturally() -> None:
    problem = Problem("customer_email", "invalid_email", (("address", "nope"), ("reason", "the @ sign is missing")))
    assert problem.label("en") == "Customer Email"
    assert problem.label("de") == "Kunden-E-Mail"
    assert problem.message("en") == '"nope" is not a valid email address: the @ sign is missing.'
    assert problem.message("de") == "„nope“ ist keine gültige E-Mail-Adresse (das @-Zeichen fehlt)."
    assert Problem("account_domain", "domain_taken", (("ref", "SA-000042"),)).message("de") == (
        "Für diese Domain gibt es bereits einen offenen oder aktiven Antrag: SA-000042.")


def test_every_reason_the_validator_produces_has_german_wording() -> None:
    bad_addresses = ["anna", "@x.example", "anna@", "a@@x.example", "a..b@x.example", "a@x", "a@x.test",
                     "a@[192.0.2.1]", "a b@x.example", "a@-x.example", "x" * 300 + "@x.example", "a@x.123"]
    bad_domains = ["https://x.example", "x.example/p", "x.example:1", "a@x.example", "x y.example", "x",
                   "x..example", "-x.example", "x_y.example", "x" * 64 + ".example", "192.0.2.1", "x.123",
                   "x.test", "xn--zz.example", ("a" * 60 + ".") * 5 + "example"]
    seen: list[Problem] = []
    for address in bad_addresses:
        result = check(form(**{**GOOD, "user_emails": address}))
        assert isinstance(result, list)
        seen += result
    for domain in bad_domains:
        result = check(form(**{**GOOD, "account_domain": domain}))
        assert isinstance(result, list)
        seen += [p for p in result if p.code == "invalid_domain"]
    assert len(seen) == len(bad_addresses) + len(bad_domains)
    for problem in seen:
        german = problem.message("de")
        assert "(" in german, (problem, german)      # the reason, translated
        assert not any(word in german for word in (" the ", " is ", " must ")), german


def test_labels_exist_for_every_field_in_both_languages() -> None:
    for spec in FIELDS:
        problem = Problem(spec.name, "missing")
        assert problem.label("en") == spec.en
        assert problem.label("de") == spec.de


def test_megabyte_values_are_validated_quickly() -> None:
    hostile = form(account_name="x" * 2_000_000, customer_email="a@" + "b" * 2_000_000,
                   account_domain="a." * 500_000 + "example", user_emails="<" * 500_000 + "x" * 1_000_000,
                   note_to_users="\x01" * 1_000_000)
    start = time.perf_counter()
    assert problems(hostile) == [
        ("account_name", "too_long"), ("customer_email", "invalid_email"), ("account_domain", "invalid_domain"),
        ("user_emails", "invalid_email"), ("note_to_users", "control_characters"), ("note_to_users", "too_long"),
    ]
    assert time.perf_counter() - start < 3.0


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200d", "\u202a"])
def test_a_name_with_invisible_formatting_is_refused(char: str) -> None:
    """DESIGN §2: a direction override would show "Acme" as something else in every subject."""
    result = check(form(**{**GOOD, "account_name": f"Acme{char}Robotics"}))
    assert isinstance(result, list) and ("account_name", "invisible_characters") in [(p.field, p.code) for p in result]
