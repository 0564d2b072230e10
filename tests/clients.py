"""Replies as the mainstream mail clients write them, and one-click answers as a client composes them.

Each builder takes the email being answered (as the recipient saw it) and what the person
typed, and writes what Outlook, Gmail, Apple Mail or Thunderbird would send: the quote
above or below, their attribution lines, text or HTML, threading headers.
"""

from __future__ import annotations

import email.utils
import html
import urllib.parse
from email.message import EmailMessage

from e2e import Sent

CLIENTS = ("outlook", "gmail", "apple", "thunderbird")


def _attribution(client: str, original: Sent, lang: str) -> str:
    when = email.utils.parsedate_to_datetime(str(original.msg["Date"]))
    sender = "Smart Accounts <smart-accounts@example.com>"
    if client == "apple":
        return (f"On {when:%d %b %Y}, at {when:%H:%M}, {sender} wrote:" if lang == "en"
                else f"Am {when:%d.%m.%Y} um {when:%H:%M} schrieb {sender}:")
    if client == "thunderbird":
        return (f"On {when:%d/%m/%Y %H:%M}, Smart Accounts wrote:" if lang == "en"
                else f"Am {when:%d.%m.%y} um {when:%H:%M} schrieb Smart Accounts:")
    return (f"On {email.utils.format_datetime(when)}, {sender} wrote:" if lang == "en"
            else f"Am {email.utils.format_datetime(when)} schrieb {sender}:")


def client_reply(original: Sent, typed: str, *, client: str, html_part: bool = False, bottom: bool = False,
                 lang: str = "en", sender: str | None = None) -> EmailMessage:
    """What `client` sends when a person answers `original` with `typed`."""
    sender = sender or original.to
    quoted = "\n".join("> " + line for line in original.text.splitlines())
    if client == "outlook":   # top-posted, the original below a header block, unquoted
        block = ("-----Original Message-----\nFrom: Smart Accounts <smart-accounts@example.com>\n"
                 f"Sent: {original.msg['Date']}\nTo: {sender}\nSubject: {original.subject}\n" if lang == "en" else
                 "-----Ursprüngliche Nachricht-----\nVon: Smart Accounts <smart-accounts@example.com>\n"
                 f"Gesendet: {original.msg['Date']}\nAn: {sender}\nBetreff: {original.subject}\n")
        text = f"{typed}\n\n{block}\n{original.text}\n"
    elif bottom:
        text = f"{_attribution(client, original, lang)}\n{quoted}\n\n{typed}\n"
    else:
        text = f"{typed}\n\n{_attribution(client, original, lang)}\n{quoted}\n"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = str(original.msg["Reply-To"] or original.msg["From"])
    msg["Subject"] = ("Re: " if lang == "en" else "AW: ") + original.subject
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    msg["In-Reply-To"] = str(original.msg["Message-ID"])
    msg["References"] = str(original.msg["Message-ID"])
    if client == "apple":
        msg["X-Mailer"] = "Apple Mail (2.3774.500.171.1.1)"
    elif client == "thunderbird":
        msg["User-Agent"] = "Mozilla Thunderbird"
    msg.set_content(text)
    if html_part:
        msg.add_alternative(_html(client, original, typed, lang, bottom), subtype="html")
    return msg


def _html(client: str, original: Sent, typed: str, lang: str, bottom: bool) -> str:
    mine = f"<div>{html.escape(typed)}</div>"
    attribution = html.escape(_attribution(client, original, lang))
    theirs = original.html or "<p>" + html.escape(original.text).replace("\n", "<br>") + "</p>"
    if client == "gmail":
        quote = (f'<div class="gmail_quote"><div class="gmail_attr">{attribution}</div>'
                 f'<blockquote class="gmail_quote">{theirs}</blockquote></div>')
    elif client == "apple":
        quote = f'<div><br><blockquote type="cite"><div>{attribution}</div>{theirs}</blockquote></div>'
    elif client == "thunderbird":
        quote = f'<div class="moz-cite-prefix">{attribution}<br></div><blockquote type="cite">{theirs}</blockquote>'
    else:   # Outlook
        quote = ('<div id="divRplyFwdMsg"><b>From:</b> Smart Accounts<br><b>Sent:</b> today<br>'
                 f'<b>Subject:</b> {html.escape(original.subject)}</div>{theirs}')
    body = f"{quote}{mine}" if bottom else f"{mine}<br>{quote}"
    return f"<html><body>{body}</body></html>"


def one_click(href: str, sender: str) -> EmailMessage:
    """What a mail client sends when its user follows a mailto: link and presses Send (RFC 6068)."""
    url = urllib.parse.urlsplit(href)
    assert url.scheme == "mailto", href
    fields = urllib.parse.parse_qs(url.query)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = urllib.parse.unquote(url.path)
    msg["Subject"] = fields["subject"][0]
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    msg.set_content(fields["body"][0].replace("\r\n", "\n"))
    return msg


def links(sent: Sent) -> dict[str, str]:
    """The one-click answers in an email's HTML part: button text -> mailto URL."""
    import re

    return {html.unescape(word): html.unescape(href)
            for href, word in re.findall(r'<a href="(mailto:[^"]+)"[^>]*>([^<]+)</a>', sent.html)}
