"""Reply keywords, quote trimming, references and reply tokens (DESIGN §3)."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from parsers.classify import Intent, NewRequest, Reply, classify
from parsers.message import parse_message
from parsers.reply import (
    KEYWORDS,
    MAX_HEADER_LINE,
    MAX_KEYWORD_LINE,
    Command,
    Keyword,
    find_command,
    find_refs,
    own_message_ids,
    reply_text,
    token_candidates,
)

# ../shared/corpus from the repository; a git worktree one level deeper finds it too.
CORPUS = next((p / "shared" / "corpus" for p in Path(__file__).resolve().parents[2:]
               if (p / "shared" / "corpus" / "index.tsv").is_file()),
              Path(__file__).parent.parent.parent / "shared" / "corpus")
TOKEN = "abcdefghijklmnopqrstuvwxyz"[:20] + "234567"
assert len(TOKEN) == 26

QUOTE = "> Please reply CONFIRM to create the account.\n> Ref: SA-000042 · Code: " + TOKEN + "\n"

GMAIL_EN = "On Tue, Nov 24, 2026 at 10:00 AM Smart Accounts <smart-accounts@example.com> wrote:\n"
GMAIL_EN_WRAPPED = "On Tue, Nov 24, 2026 at 10:00 AM Smart Accounts <\nsmart-accounts@example.com> wrote:\n"
GMAIL_DE = "Am Di., 24. Nov. 2026 um 10:00 Uhr schrieb Smart Accounts <\nsmart-accounts@example.com>:\n"
THUNDERBIRD_DE = "Am 24.11.2026 um 10:00 schrieb Smart Accounts:\n"
APPLE_EN = "> On 24 Nov 2026, at 10:00, Smart Accounts <smart-accounts@example.com> wrote:\n>\n"
OUTLOOK_EN = ("________________________________\nFrom: Smart Accounts <smart-accounts@example.com>\n"
              "Sent: Tuesday, November 24, 2026 10:00 AM\nTo: Pat <pat@partner.example>\n"
              "Subject: Review SA-000042\n\nPlease reply CONFIRM\n")
OUTLOOK_DE = ("-----Ursprüngliche Nachricht-----\nVon: Smart Accounts <smart-accounts@example.com>\n"
              "Gesendet: Dienstag, 24. November 2026 10:00\nAn: Pat\nBetreff: Prüfung SA-000042\n\n"
              "Bitte antworten Sie mit BESTÄTIGEN\n")
OUTLOOK_BLOCK_ONLY = ("From: Smart Accounts <smart-accounts@example.com>\nSent: Tuesday\n"
                      "To: Pat\nSubject: Review\n\nReply CONFIRM\n")


@pytest.mark.parametrize(
    ("text", "keyword", "language"),
    [
        ("CONFIRM\n\n" + GMAIL_EN + QUOTE, Keyword.CONFIRM, "en"),
        ("confirm.\n\n" + GMAIL_EN_WRAPPED + QUOTE, Keyword.CONFIRM, "en"),
        ("Bestätigen!\n\n" + GMAIL_DE + QUOTE, Keyword.CONFIRM, "de"),
        ("BESTAETIGEN\n" + THUNDERBIRD_DE + QUOTE, Keyword.CONFIRM, "de"),
        ("**Cancel**\n\n" + APPLE_EN + QUOTE, Keyword.CANCEL, "en"),
        ("  stornieren  \n" + OUTLOOK_DE, Keyword.CANCEL, "de"),
        ("Accept\n\nPat\n" + OUTLOOK_EN, Keyword.ACCEPT, "en"),
        ("AKZEPTIEREN\n" + OUTLOOK_BLOCK_ONLY, Keyword.ACCEPT, "de"),
        ("Decline...\n", Keyword.DECLINE, "en"),
        ("ablehnen\n-- \nPat Partner\n", Keyword.DECLINE, "de"),
        ("\n\n   \nHelp!\n", Keyword.HELP, "en"),
        ("HILFE\n", Keyword.HELP, "de"),
        # bottom-posted: the quote header and quote come first, the answer below
        (GMAIL_EN + QUOTE + "\nCONFIRM\n", Keyword.CONFIRM, "en"),
        (GMAIL_DE + QUOTE + "\nbestätigen\n\nGruß Pat\n", Keyword.CONFIRM, "de"),
        (QUOTE + "\naccept\n", Keyword.ACCEPT, "en"),
        (GMAIL_EN + "\n" + QUOTE + "\nACCEPT\n", Keyword.ACCEPT, "en"),   # a blank line below the header
        (GMAIL_EN_WRAPPED + QUOTE + "\nDECLINE\n", Keyword.DECLINE, "en"),
        # emphasis, when symmetric (bold in a plain-text part, Markdown), and trailing . ! ,
        ("*ACCEPT*\n", Keyword.ACCEPT, "en"),
        ("**Accept**.\n", Keyword.ACCEPT, "en"),
        ("*ACCEPT!*\n", Keyword.ACCEPT, "en"),
        ("_Ablehnen_,\n", Keyword.DECLINE, "de"),
        ("*_CONFIRM_*\n", Keyword.CONFIRM, "en"),
        ("`cancel`\n", Keyword.CANCEL, "en"),
        ("Decline\u2026\n", Keyword.DECLINE, "en"),       # an ellipsis is full stops
        ("\u00a0ACCEPT\u00a0!!\n", Keyword.ACCEPT, "en"),
        ("AC\u200bCEPT\n", Keyword.ACCEPT, "en"),         # invisible characters are dropped
    ],
)
def test_find_command(text: str, keyword: Keyword, language: str) -> None:
    assert find_command(text) == Command(keyword=keyword, language=language, ref=None)


def test_crlf_text_works() -> None:
    assert find_command(("CONFIRM\n\n" + GMAIL_EN + QUOTE).replace("\n", "\r\n")) is not None


@pytest.mark.parametrize(
    "text",
    [
        "I do not CONFIRM\n",
        "CONFIRM the request please\n",
        "Please cancel it. CANCEL\n",
        GMAIL_EN + QUOTE,                          # keyword only in the quote
        GMAIL_EN + "> CONFIRM\n",
        OUTLOOK_EN,                                # Outlook quotes without ">"
        "",
        "\n\n",
        "Account Name: Acme\nCustomer Email: it@acme.example\nAccount Domain: acme.example\n",
        "From: a\nTo: b\nSubject: c\nAccount Name: Acme\n",
    ],
)
def test_no_command(text: str) -> None:
    assert find_command(text) is None


# ------------------------------------------------------------------ consent only where it is stated (issue 11)

@pytest.mark.parametrize(
    "text",
    [
        # Ends in "wrote:" and names an address, but nothing quoted follows: it is the answer itself.
        "DECLINE - as my boss (boss@acme.example) wrote:\nACCEPT\n",
        "DECLINE - as my boss (boss@acme.example) wrote:\n\nACCEPT\n\n" + GMAIL_EN + QUOTE,
        "Am Montag schrieb mein Chef:\nAKZEPTIEREN\n",
    ],
)
def test_a_quote_header_counts_only_above_a_quote(text: str) -> None:
    assert find_command(text) is None


@pytest.mark.parametrize("text", ["ACCEPT?", "Accept?!", "accept!?", "CONFIRM ?", "*ACCEPT?*", "Help?", "Status?"])
def test_a_question_is_never_a_decision(text: str) -> None:
    assert find_command(text + "\n\n" + GMAIL_EN + QUOTE) is None


@pytest.mark.parametrize("text", ["*ACCEPT", "ACCEPT*", "**ACCEPT*", "*ACCEPT_", "~~ACCEPT~~", "~ACCEPT~",
                                  "ACCEPT;", "ACCEPT:"])
def test_unbalanced_or_other_decoration_is_not_a_decision(text: str) -> None:
    assert find_command(text + "\n") is None


def test_line_limits() -> None:
    # A keyword line is short: padding up to MAX_KEYWORD_LINE is still read, one more character is not.
    assert find_command("ACCEPT" + "!" * (MAX_KEYWORD_LINE - 6)) == Command(Keyword.ACCEPT, "en", None)
    assert find_command("ACCEPT" + "!" * (MAX_KEYWORD_LINE - 5)) is None
    # A quote header is short: a longer "wrote:" line is own text, and no keyword line.
    attribution = "On Tue, Nov 24, 2026, Pat <pat@partner.example> wrote:"
    fits = attribution.replace("Pat", "Pat" + "a" * (MAX_HEADER_LINE - len(attribution)))
    assert len(fits) == MAX_HEADER_LINE
    assert find_command(fits + "\n" + QUOTE + "\nACCEPT\n") == Command(Keyword.ACCEPT, "en", None)
    assert find_command(fits.replace("Pat", "Pata") + "\n" + QUOTE + "\nACCEPT\n") is None


def test_status_with_and_without_ref() -> None:
    assert find_command("STATUS SA-000042\n" + GMAIL_EN + QUOTE) == Command(Keyword.STATUS, "en", "SA-000042")
    assert find_command("status: sa-1234567.") == Command(Keyword.STATUS, "en", "SA-1234567")
    assert find_command("Status\n" + GMAIL_DE + QUOTE) == Command(Keyword.STATUS, "de", None)
    assert find_command("STATUS SA-12\n") is None


def test_keyword_table_is_complete() -> None:
    assert {kw for kw, _ in KEYWORDS.values()} == set(Keyword)
    assert all(lang in ("en", "de") for _, lang in KEYWORDS.values())
    assert all(kw.value in KEYWORDS for kw in Keyword)


def test_reply_text_drops_quotes_and_headers() -> None:
    assert reply_text("Fine by me.\nPat\n\n" + GMAIL_EN + QUOTE) == "Fine by me.\nPat"
    assert reply_text("Ok\n" + OUTLOOK_DE) == "Ok"
    assert reply_text(GMAIL_EN + QUOTE + "\nBelow\n") == "Below"
    # Yahoo: the attribution sits above the original in Outlook's From:/Sent: form.
    yahoo = "--- On Tue, 24/11/26, Smart Accounts <smart-accounts@example.com> wrote:\n\n" + OUTLOOK_BLOCK_ONLY
    assert reply_text("Cancel\n\n" + yahoo) == "Cancel"
    form = "Account Name: Acme\nCustomer Email: it@acme.example\nUser Emails: a@x, b@x\n"
    assert reply_text(form) == form.rstrip("\n")


def _html_reply(html: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "pat@partner.example"
    msg["To"] = f"smart-accounts+{TOKEN}@example.com"
    msg["Subject"] = "Re: Review SA-000042"
    msg.set_content(html, subtype="html")
    return msg.as_bytes()


def test_gmail_html_reply() -> None:
    raw = _html_reply(
        '<div dir="ltr">Confirm</div><br><div class="gmail_quote gmail_quote_container">'
        '<div dir="ltr" class="gmail_attr">On Tue, Nov 24, 2026 at 10:00 AM Smart Accounts &lt;'
        'smart-accounts@example.com&gt; wrote:<br></div><blockquote class="gmail_quote" '
        'style="margin:0px 0px 0px 0.8ex">Please reply <b>CANCEL</b> or CONFIRM<br>Ref: SA-000042 · Code: '
        f'{TOKEN}</blockquote></div>')
    msg = parse_message(raw)
    assert find_command(msg.text) == Command(Keyword.CONFIRM, "en", None)
    assert token_candidates(msg, "example.com") == (TOKEN,)


def test_outlook_html_reply() -> None:
    raw = _html_reply(
        '<html><body><div><p class="MsoNormal">Ablehnen<o:p></o:p></p></div>'
        '<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">'
        '<p class="MsoNormal"><b>Von:</b> Smart Accounts<br><b>Gesendet:</b> Dienstag<br>'
        '<b>An:</b> Kunde<br><b>Betreff:</b> Aktivierung</p></div>'
        '<p>Antworten Sie AKZEPTIEREN</p></body></html>')
    assert find_command(parse_message(raw).text) == Command(Keyword.DECLINE, "de", None)


def test_html_bottom_posted_below_blockquote() -> None:
    raw = _html_reply("<blockquote>Reply CONFIRM</blockquote><p>accept</p>")
    assert find_command(parse_message(raw).text) == Command(Keyword.ACCEPT, "en", None)


# ------------------------------------------------------------------ tokens and refs

def _reply(to: str = "smart-accounts@example.com", body: str = "CONFIRM\n", **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "pat@partner.example"
    msg["To"] = to
    msg["Subject"] = headers.pop("Subject", "Re: Review")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def test_token_from_plus_address() -> None:
    msg = parse_message(_reply(to=f"Smart Accounts <Smart-Accounts+x+{TOKEN.upper()}@Example.com>"))
    assert token_candidates(msg, "example.com") == (TOKEN,)


def test_our_message_ids_come_from_in_reply_to_and_references_never_as_tokens() -> None:
    """Our Message-IDs are random and map to tokens only through the database (DESIGN §3)."""
    other = "b" * 26
    msg = parse_message(_reply(In_Reply_To=f"<{TOKEN}@example.com>",
                               References=f"<unrelated@x> <{other}@example.com> <{TOKEN}@example.com>"))
    assert own_message_ids(msg, "example.com") == (f"{TOKEN}@example.com", f"{other}@example.com")
    assert token_candidates(msg, "example.com") == ()


def test_token_from_quoted_footer_and_order() -> None:
    body_token = "c" * 26
    msg = parse_message(_reply(to=f"smart-accounts+{TOKEN}@example.com",
                               body=f"CONFIRM\n\n> Ref: SA-000042 · Code: {body_token.upper()}\n"))
    assert token_candidates(msg, "example.com") == (TOKEN, body_token)


def test_tokens_need_exact_length_and_alphabet() -> None:
    body = "Code: " + "a" * 27 + "\nCode: " + "a" * 25 + "\nCode: " + "a" * 25 + "1\nCode: " + "a" * 25 + "8\n"
    assert token_candidates(parse_message(_reply(to="sa+" + "a" * 25 + "@example.com", body=body)),
                            "example.com") == ()


def test_token_candidates_are_bounded() -> None:
    body = "\n".join(f"Code: {chr(97 + i % 26)}{chr(97 + i // 26)}" + "x" * 24 for i in range(100))
    assert len(token_candidates(parse_message(_reply(body=body)), "example.com")) == 20


# ------------------------------------------------------------------ tokens only where we put them (issue 11)

GERMAN_REQUEST = """Guten Tag,

anbei unser Antrag.

Kontoname: Müller Maschinenbau GmbH
Kunden-E-Mail: it@mueller-maschinenbau.example
Kontodomäne: mueller-maschinenbau.example

Mit freundlichen Grüßen
Petra Partner

--
Partner GmbH · Musterstraße 1 · 12345 Musterstadt
Hinweise zum Datenschutz nach der Datenschutzgrundverordnung (DSGVO): https://partner.example/datenschutz
"""


def _classify(raw: bytes) -> Intent:
    return classify(parse_message(raw), partner_domains=("partner.example",), own_address="smart-accounts@example.com")


def test_a_german_request_with_a_long_compound_word_is_a_new_request() -> None:
    assert len("Datenschutzgrundverordnung") == 26
    intent = _classify(_reply(body=GERMAN_REQUEST, Subject="Antrag Smart Account"))
    assert isinstance(intent, NewRequest)
    assert intent.form.fields["account_name"] == "Müller Maschinenbau GmbH"


FOOTER = f"Ref: SA-000042 \u00b7 Code: {TOKEN}"


@pytest.mark.parametrize(
    ("route", "raw"),
    [
        ("plus-address only", _reply(to=f"Smart Accounts <smart-accounts+{TOKEN}@example.com>", body="ACCEPT\n")),
        ("quoted footer", _reply(body=f"ACCEPT\n\n{GMAIL_EN}> Please reply ACCEPT.\n>\n> {FOOTER}\n")),
        ("footer quoted twice", _reply(body=f"ACCEPT\n\n>> {FOOTER}\n")),
        ("Outlook, original unquoted", _reply(body=f"ACCEPT\n\n{OUTLOOK_BLOCK_ONLY}\n{FOOTER}\n")),
        ("one-click answer", _reply(body=f"ACCEPT\n\n{FOOTER}\n")),
        ("middle dot read as Latin-1", _reply(body=f"ACCEPT\n\n> Ref: SA-000042 \u00c2\u00b7 Code: {TOKEN}\n")),
        ("middle dot lost to a charset", _reply(body=f"ACCEPT\n\n> Ref: SA-000042 ? Code: {TOKEN}\n")),
        ("HTML quote", _html_reply(f'<div>ACCEPT</div><blockquote type="cite"><p>Please reply ACCEPT.</p>'
                                   f'<p><span style="font-family:monospace">{FOOTER}</span><br>'
                                   f'Please keep this line.</p></blockquote>').replace(
                                       f"+{TOKEN}@".encode(), b"@")),
    ],
)
def test_a_reply_carries_its_token_by_every_route(route: str, raw: bytes) -> None:
    msg = parse_message(raw)
    assert token_candidates(msg, "example.com") == (TOKEN,), route
    intent = _classify(raw)
    assert isinstance(intent, Reply) and intent.command == Command(Keyword.ACCEPT, "en", None)
    assert intent.tokens == (TOKEN,)


OUR_ID = "q" * 26 + "@example.com"


@pytest.mark.parametrize(("route", "raw"), [
    ("In-Reply-To, Gmail quote without footer",
     _reply(body="ACCEPT\n\n" + GMAIL_EN + "> Please reply ACCEPT or DECLINE.\n", In_Reply_To=f"<{OUR_ID}>")),
    ("References, our id last", _reply(body="ACCEPT\n", References=f"<root@partner.example> <{OUR_ID.upper()}>")),
])
def test_a_reply_names_our_message_id_when_code_and_plus_address_are_gone(route: str, raw: bytes) -> None:
    intent = _classify(raw)
    assert isinstance(intent, Reply) and intent.tokens == () and intent.command is not None, route
    assert [i.lower() for i in intent.thread_ids] == [OUR_ID]


def test_a_corrected_form_sent_as_a_reply_to_our_rejection_is_a_new_request() -> None:
    form = "Account Name: Acme\nCustomer Email: carla@acme.example\nAccount Domain: acme.example\n"
    assert isinstance(_classify(_reply(body=form, In_Reply_To=f"<{OUR_ID}>")), NewRequest)


@pytest.mark.parametrize(
    ("where", "raw"),
    [
        ("a word in the text", _reply(body=f"ACCEPT\n\nMy code is {TOKEN}.\n")),
        ("a word alone on its line", _reply(body=f"ACCEPT\n\n{TOKEN}\n")),
        ("Code: in the middle of a line", _reply(body=f"ACCEPT\n\nThe Code: {TOKEN}\n")),
        ("Code: with more words after it", _reply(body=f"ACCEPT\n\n> {FOOTER} please\n")),
        ("someone else's Message-ID", _reply(In_Reply_To=f"<{TOKEN}.sa-000042@elsewhere.example>")),
        ("our Message-ID", _reply(In_Reply_To=f"<{TOKEN}@example.com>")),
        ("a token not first in our Message-ID", _reply(References=f"<x.{TOKEN}@example.com>")),
        ("someone else's plus-address", _reply(to=f"pat+{TOKEN}@partner.example")),
    ],
)
def test_a_word_of_token_length_elsewhere_is_no_token(where: str, raw: bytes) -> None:
    assert token_candidates(parse_message(raw), "example.com") == (), where


def test_find_refs_subject_first() -> None:
    msg = parse_message(_reply(Subject="Re: Review sa-000042", body="See SA-1234567 and SA-000042, not SA-12."))
    assert find_refs(msg) == ("SA-000042", "SA-1234567")


# ------------------------------------------------------------------ real clients (corpus)

@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("talon__android", "Hello"),
        ("talon__aol", "Hello"),
        ("talon__apple_mail", "Hello"),
        ("talon__comcast", "Hello"),
        ("talon__gmail", "Hello"),
        ("talon__hotmail", "Hello"),
        ("talon__outlook", "Hello"),
        ("talon__thunderbird", "Hello"),
        ("talon__yahoo", "Hello"),
        ("talon__iphone", "Hello\n\nSent from my iPhone"),
        ("discourse__quirks_exchange_xars", "Some thing."),
    ],
)
def test_reply_text_on_real_client_replies(name: str, expected: str) -> None:
    msg = parse_message((CORPUS / "human" / f"{name}.eml").read_bytes())
    assert reply_text(msg.text) == expected


def test_reply_text_keeps_own_text_of_long_real_replies() -> None:
    share = parse_message((CORPUS / "human" / "talon__reply-quotations-share-block.eml").read_bytes())
    own = reply_text(share.text)
    assert own.startswith("Hi Katharine.") and own.endswith("Joe XXX") and "booking inquiry" not in own
    gitlab = parse_message((CORPUS / "human" / "gitlab__valid_reply.eml").read_bytes())
    own = reply_text(gitlab.text)
    assert own.endswith("- Jake out") and "unsubscribe" not in own.lower()
