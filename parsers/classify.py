"""ParsedMessage -> Intent: what kind of mail this is, before any database look-up (DESIGN §3).

The form is parsed from the whole text before any quote trimming, because trimmers
take runs of `Label:` lines for a quoted header block; a keyword counts only in the
reply's own text, above the quote.
"""

from __future__ import annotations

from dataclasses import dataclass

import authres

from parsers.form import FormResult, parse_form
from parsers.message import ParsedMessage, ascii_domain
from parsers.ref import find_refs as refs_in
from parsers.reply import (
    Command, Keyword, find_command, find_refs, first_line, own_message_ids, token_candidates,
)


@dataclass(frozen=True)
class NewRequest:
    form: FormResult


@dataclass(frozen=True)
class Reply:
    """Carries candidate tokens; which request it answers is known only after a hash look-up."""

    command: Command | None
    tokens: tuple[str, ...]
    subject_refs: tuple[str, ...]
    thread_ids: tuple[str, ...] = ()     # our own Message-IDs it answers
    line: str = ""                        # the first line the writer wrote: what an answer says it read


@dataclass(frozen=True)
class CommandMail:
    command: Command            # HELP, or STATUS with a ref


@dataclass(frozen=True)
class Bounce:
    bounced_message_ids: tuple[str, ...]
    status: str | None


@dataclass(frozen=True)
class NotARequest:
    """From someone allowed to write, but neither a form nor a command: answered with the blank form."""


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class Refuse:
    """Whoever wrote it cannot be told apart from a forger: never acted on, never answered (DESIGN §3)."""

    reason: str                 # "from_not_one_address" | "dmarc"


Intent = NewRequest | Reply | CommandMail | Bounce | NotARequest | Ignore | Refuse


def classify(msg: ParsedMessage, *, partner_domains: tuple[str, ...], own_address: str,
             dmarc_authserv_id: str | None = None) -> Intent:
    """What the message is. With `dmarc_authserv_id` (require_dmarc_pass), only mail with an aligned
    dmarc=pass from that server may act or be answered, new requests as well as replies."""
    if msg.is_bounce:  # before the sender check: bounces often come from MAILER-DAEMON or <>
        return Bounce(msg.bounced_message_ids, msg.bounce_status)
    if msg.sender is None:
        return Ignore("no_sender")
    if msg.auto_marks:
        return Ignore("automatic:" + ",".join(msg.auto_marks[:3]))
    if _same_mailbox(msg.sender, own_address):
        return Ignore("from_ourselves")
    if msg.from_count != 1:
        return Refuse("from_not_one_address")
    if dmarc_authserv_id is not None and not dmarc_passed(msg, dmarc_authserv_id):
        return Refuse("dmarc")
    command = find_command(msg.text)
    own_domain = own_address.rpartition("@")[2]
    tokens = token_candidates(msg, own_domain)
    thread = own_message_ids(msg, own_domain)
    if tokens or (thread and command is not None):
        return Reply(command, tokens, subject_refs(msg), thread, first_line(msg.text))
    if command is not None and command.keyword is Keyword.STATUS:
        return CommandMail(command)  # answered only to a party of the request it names
    if not sender_allowed(msg.sender, partner_domains):
        if thread or find_refs(msg):
            return Reply(command, (), subject_refs(msg), thread, first_line(msg.text))  # without a token: logged, no effect
        return Ignore("outsider")
    if command is not None and command.keyword is Keyword.HELP:
        return CommandMail(command)
    form = parse_form(msg.text)
    if not form.found and msg.attachment_text:
        form = parse_form(msg.attachment_text)  # "see the attached form"
    if form.found:
        return NewRequest(form)   # also a corrected form sent as a reply to our rejection
    if command is not None or thread or find_refs(msg):
        return Reply(command, (), subject_refs(msg), thread, first_line(msg.text))
    return NotARequest()


def sender_allowed(sender: str, partner_domains: tuple[str, ...]) -> bool:
    """DESIGN §5: a partner domain or a subdomain of one; "*" lets anyone, and nothing lets no one."""
    if partner_domains == ("*",):
        return True
    domain = sender.rpartition("@")[2].lower()
    return any(domain == d or domain.endswith("." + d) for d in partner_domains)


MAX_AUTH_RESULTS = 8_000      # characters of the one Authentication-Results value parsed; ours is far shorter


def dmarc_passed(msg: ParsedMessage, trusted_authserv_id: str) -> bool:
    """DESIGN §3: only the topmost Authentication-Results header added by our own server counts (a
    receiving server prepends its own, RFC 8601 §5, so one below it with our name may be forged),
    and its dmarc=pass must be for the domain of the From address."""
    trusted = trusted_authserv_id.strip().lower()
    ours = next((value for value in msg.authentication_results if _authserv_id(value) == trusted), None)
    if ours is None or msg.sender is None or len(ours) > MAX_AUTH_RESULTS:
        return False
    try:
        header = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {ours}")
    except (authres.AuthResError, RecursionError):        # authres recurses into nested comments
        return False
    domain = ascii_domain(msg.sender.rpartition("@")[2])
    return any(
        result.method == "dmarc" and result.result == "pass"
        and any(p.type == "header" and p.name == "from" and ascii_domain(str(p.value)) == domain
                for p in result.properties)
        for result in header.results
    )


def _authserv_id(value: str) -> str:
    """The first word of the value, before its ";" (RFC 8601 §2.2), without parsing the rest."""
    words = value[:MAX_AUTH_RESULTS].split(";", 1)[0].split()
    return words[0].lower() if words else ""


def subject_refs(msg: ParsedMessage) -> tuple[str, ...]:
    return tuple(dict.fromkeys(refs_in(msg.subject)))


def _same_mailbox(a: str, b: str) -> bool:
    """smart-accounts+x@example.com is the same mailbox as smart-accounts@example.com."""
    def base(addr: str) -> str:
        local, _, domain = addr.lower().rpartition("@")
        return local.split("+", 1)[0] + "@" + domain
    return base(a) == base(b)
