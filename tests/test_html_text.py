"""html_to_text: what reply and form parsing see of an HTML-only email (DESIGN §2, §3)."""

from __future__ import annotations

from parsers import message
from parsers.html_text import html_to_text


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
