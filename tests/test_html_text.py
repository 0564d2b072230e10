"""html_to_text: what reply and form parsing see of an HTML-only email (DESIGN §2, §3)."""

from __future__ import annotations

from parsers import message
from parsers.html_text import MAX_HTML, MAX_OPEN, MAX_OUTPUT, MAX_QUOTE_DEPTH, html_to_text
from parsers.message import parse_message


def test_blocks_breaks_and_entities_become_lines() -> None:
    markup = ("<html><head><style>p{color:red}</style><script>alert(1)</script></head><body>"
              "<div>CONFIRM</div><div>Thanks &amp; bye<br>Pat</div></body></html>")
    assert html_to_text(markup).split("\n") == ["CONFIRM", "Thanks & bye", "Pat"]


def test_gmail_quote_container_becomes_quoted_lines() -> None:
    gmail = ('<div dir="ltr">ACCEPT</div><br><div class="gmail_quote gmail_quote_container">'
             '<div class="gmail_attr">On Mon, Nov 24, 2026 at 10:00 AM Smart Accounts wrote:<br></div>'
             '<blockquote class="gmail_quote">Reply ACCEPT</blockquote></div>')
    assert [line for line in html_to_text(gmail).split("\n") if line] == [
        "ACCEPT", "On Mon, Nov 24, 2026 at 10:00 AM Smart Accounts wrote:", "> Reply ACCEPT"]


def test_outlook_reply_header_is_set_apart() -> None:
    outlook = ('<div>ABLEHNEN</div><hr><div id="divRplyFwdMsg"><b>Von:</b> Smart Accounts<br>'
               '<b>Gesendet:</b> Montag<br><b>Betreff:</b> Aktivierung</div><div>Bitte AKZEPTIEREN</div>')
    lines = html_to_text(outlook).split("\n")
    assert lines[0] == "ABLEHNEN" and lines[1].startswith("____") and lines[2] == "Von: Smart Accounts"


def test_apple_and_thunderbird_cites_are_quotes() -> None:
    apple = '<div>CONFIRM</div><blockquote type="cite"><div>Please reply</div></blockquote>'
    assert html_to_text(apple).split("\n") == ["CONFIRM", "> Please reply"]
    thunderbird = '<p>CANCEL</p><div class="moz-cite-prefix">Smart Accounts wrote:</div>'
    assert html_to_text(thunderbird).split("\n") == ["CANCEL", "> Smart Accounts wrote:"]


def test_pre_keeps_layout_and_unbalanced_markup_is_tolerated() -> None:
    assert html_to_text("<p>a<p>b</p><pre>x\n  y</pre>") == "a\nb\nx\n  y"
    assert html_to_text("<div><b>unclosed <i>tags") == "unclosed tags"
    assert html_to_text("<table><tr><td>Account Name:</td><td>Acme</td></tr></table>") == "Account Name: Acme"


def test_still_importable_from_parsers_message() -> None:
    assert message.html_to_text is html_to_text


# ------------------------------------------------------------------ hostile markup (issue 11)

def _html_mail(markup: str) -> bytes:
    return ("From: pat@partner.example\r\nTo: smart-accounts@example.com\r\nSubject: x\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n" + markup).encode()


def test_a_huge_numeric_character_reference_is_read_not_raised() -> None:
    # int() refuses more than 4,300 digits; html.unescape passed that ValueError on.
    markup = "<p>CONFIRM</p><p>&#" + "1" * 5_000 + ";</p><p>&#x" + "f" * 5_000 + "</p>"
    assert html_to_text(markup).split("\n") == ["CONFIRM", "\ufffd", "\ufffd"]
    assert parse_message(_html_mail(markup)).text.startswith("CONFIRM\n")


def test_unterminated_markup_ends_the_text_as_in_a_browser() -> None:
    # Comments, declarations and tags left open run to the end of the input (WHATWG "EOF in ...").
    assert html_to_text("<p>CONFIRM</p><!-- a note <p>ACCEPT</p>") == "CONFIRM"
    assert html_to_text("<p>CONFIRM</p><!DOCTYPE ACCEPT") == "CONFIRM"
    assert html_to_text('<p>CONFIRM</p><a href="x>ACCEPT</a>') == "CONFIRM"
    assert html_to_text("<p>CONFIRM</p><p>ACCEPT</p><script>x") == "CONFIRM\nACCEPT"
    # What is closed is skipped and what follows is read.
    assert html_to_text("<!--[if mso]><p>x</p><![endif]--><p>CONFIRM</p><?xml x?><p>a &lt; b</p>") == \
        "CONFIRM\na < b"
    assert html_to_text('<p title="a>b" data-x=\'<p>\'>CONFIRM</p><p>1 < 2</p>') == "CONFIRM\n1 < 2"


def test_the_quote_prefix_is_bounded_however_deep_the_nesting() -> None:
    text = html_to_text("<blockquote>" * 10_000 + "deep" + "</blockquote>" * 10_000 + "<p>CONFIRM</p>")
    assert text.split("\n") == ["> " * MAX_QUOTE_DEPTH + "deep", "CONFIRM"]


def test_html_over_the_size_limit_is_cut_before_conversion() -> None:
    head = "<p>CONFIRM</p><p>"
    text = html_to_text(head + "x" * (MAX_HTML - len(head) - 1) + "yz</p><p>tail</p>")
    assert text.split("\n") == ["CONFIRM", "x" * (MAX_HTML - len(head) - 1) + "y"]


def test_the_text_produced_is_bounded() -> None:
    text = html_to_text("<blockquote>" * 20 + "x<br>" * (MAX_OUTPUT // 2))
    assert MAX_OUTPUT <= len(text) <= MAX_OUTPUT + 100


def test_open_elements_tracked_are_bounded() -> None:
    # Below MAX_OPEN open elements a quote still opens; deeper ones only break lines.
    assert html_to_text("<div>" * (MAX_OPEN - 1) + "<blockquote>x") == "> x"
    assert html_to_text("<div>" * MAX_OPEN + "<blockquote>x") == "x"
