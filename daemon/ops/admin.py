"""What the admin commands do (DESIGN §6): cancel a request, look at, show and retry the outbox and the quarantine.

Each change is one transaction and one log line, like the daemon's own; the CLI only
parses arguments and prints. Refusals (a closed request, an email that has not failed)
raise AdminError, which the CLI turns into exit status 1.
"""

from __future__ import annotations

import datetime as dt
import email
import email.errors
import email.header
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Iterable

from daemon import events, log
from daemon.clock import iso
from daemon.core.decide import decide_cancel
from daemon.engine.apply import ConcurrentChange
from daemon.errors import AdminError, MailboxError
from models.message import IncomingMessage, Outcome
from models.outbox import MASK, OutboxRow, OutboxState, redacted, secrets_in
from models.request import Request
from parsers.ref import format_ref, parse_ref

if TYPE_CHECKING:
    from daemon.app import App

CANCEL_TRIES = 3


@dataclass(frozen=True)
class Retried:
    """One id of `outbox retry` / `quarantine retry`: done, or why not."""

    id: int
    problem: str | None = None


# --- requests cancel ----------------------------------------------------------------------------

def cancel_request(app: App, ref: str, reason: str = "") -> Request:
    """Cancel an open request as an admin; the parties are told as for CANCEL (DESIGN §1), now."""
    req_id = parse_ref(ref)
    if req_id is None:
        raise AdminError(f"{ref!r} is not a request reference (SA-000042)")
    for _ in range(CANCEL_TRIES):
        applier = app.store.applier()
        try:
            with app.db.atomic():
                req = Request.get_or_none(Request.id == req_id)
                if req is None:
                    raise AdminError(f"no request {format_ref(req_id)}")
                decision = decide_cancel(req, reason, applier.now, app.config.workflow)
                if decision is None:
                    raise AdminError(f"{req.ref} is {req.state}: only an open request "
                                     "(awaiting_confirmation, pending_acceptance) can be cancelled")
                applier.apply(decision)
        except ConcurrentChange:
            continue   # a reply or the daemon moved it meanwhile: look again
        applier.flush_log()
        app.outbox.drain()
        return req
    raise AdminError(f"{format_ref(req_id)} keeps changing under us; try again")


# --- outbox -------------------------------------------------------------------------------------

def outbox_rows(state: str | None = None) -> list[dict[str, Any]]:
    """Outgoing emails, newest first, without their bytes; `file` is the Maildir file it became."""
    query = OutboxRow.select(OutboxRow.id, OutboxRow.request_id, OutboxRow.kind, OutboxRow.recipient,
                             OutboxRow.state, OutboxRow.attempts, OutboxRow.created_at,
                             OutboxRow.next_try_at, OutboxRow.sent_at, OutboxRow.last_error,
                             OutboxRow.maildir_file)
    if state:
        query = query.where(OutboxRow.state == state)
    return [{
        "id": row.id, "ref": format_ref(row.request_id) if row.request_id else None, "kind": row.kind,
        "recipient": row.recipient, "state": row.state, "attempts": row.attempts, "last_error": row.last_error,
        "created_at": iso(row.created_at), "next_try_at": iso(row.next_try_at) if row.state == "queued" else None,
        "sent_at": iso(row.sent_at), "file": row.maildir_file,
    } for row in query.order_by(OutboxRow.id.desc())]


SHOWN_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "Reply-To")
_MASK = MASK.decode()
# Where a reply code stands in our own emails (a plus-address, the Code: footer, a mailto: body),
# for the parts redacted() cannot see in the bytes (a base64 body): masked once decoded too.
_CODE_PLACES = re.compile(r"(?<=\+)[a-z2-7]{26}(?=@)|(?<=Code: )[a-z2-7]{26}|(?<=Code%3A%20)[a-z2-7]{26}",
                          re.IGNORECASE)


@dataclass(frozen=True)
class ShownEmail:
    """One outgoing email as a person reads it: its headers decoded, then its text part."""

    id: int
    headers: list[tuple[str, str]]
    text: str


def outbox_email(email_id: int) -> ShownEmail:
    """The email with every reply code and Message-ID of ours masked, whether it was sent
    (stored redacted already) or still queued (stored whole, so masked here)."""
    row = OutboxRow.get_or_none(OutboxRow.id == email_id)
    if row is None:
        raise AdminError(f"no email #{email_id} in the outbox (`smartacct outbox list` shows their ids)")
    raw = bytes(row.body)
    secrets = [s.decode("ascii", "replace") for s in secrets_in(raw)]
    shown = redacted(raw)

    def masked(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, _MASK)
        return _CODE_PLACES.sub(_MASK, text)

    # The headers as written (compat32: a masked Message-ID is no longer one the strict parser
    # accepts), encoded words decoded; the body through the modern API, which decodes QP/base64.
    head = email.message_from_bytes(shown, policy=email.policy.compat32)
    headers = [(name, masked(_decoded(value))) for name in SHOWN_HEADERS
               if (value := head.get(name)) is not None]
    msg = email.message_from_bytes(shown, policy=email.policy.default)
    part = msg.get_body(preferencelist=("plain",)) if isinstance(msg, EmailMessage) else None
    text = part.get_content() if isinstance(part, EmailMessage) else ""
    return ShownEmail(row.id, headers, masked(text.replace("\r\n", "\n")))


def retry_emails(app: App, ids: Iterable[int]) -> list[Retried]:
    """Failed emails back into the queue, due now; their attempts are kept for the record."""
    results = []
    for email_id in ids:
        now = app.clock.now()
        with app.db.atomic():
            row = OutboxRow.get_or_none(OutboxRow.id == email_id)
            if row is None:
                results.append(Retried(email_id, f"no email #{email_id} in the outbox"))
                continue
            if row.state != OutboxState.failed.value:
                results.append(Retried(email_id, f"email #{email_id} is {row.state}, not failed"))
                continue
            # created_at restarts the give_up_after clock: an admin's retry gets a full new window.
            (OutboxRow.update(state=OutboxState.queued.value, next_try_at=now, created_at=now)
             .where((OutboxRow.id == row.id) & (OutboxRow.state == OutboxState.failed.value)).execute())
        log.event(events.EMAIL_REQUEUED, ref=format_ref(row.request_id) if row.request_id else None, kind=row.kind,
                  to=row.recipient, outbox=row.id, attempts=row.attempts, by="admin")
        results.append(Retried(email_id))
    return results


def _decoded(value: Any) -> str:
    """A header's value on one line, RFC 2047 encoded words decoded."""
    try:
        text = str(email.header.make_header(email.header.decode_header(str(value))))
    except (UnicodeError, LookupError, email.errors.HeaderParseError):
        text = str(value)
    return " ".join(text.split())


# --- quarantine ---------------------------------------------------------------------------------

def quarantined() -> list[dict[str, Any]]:
    """Messages that failed processing max_attempts times, newest first."""
    query = (IncomingMessage.select().where(IncomingMessage.outcome == Outcome.quarantined.value)
             .order_by(IncomingMessage.id.desc()))
    return [{
        "id": m.id, "key": m.mailbox_key, "message_id": m.message_id, "sender": m.sender, "subject": m.subject,
        "attempts": m.attempts, "last_error": m.last_error, "received_at": iso(m.received_at),
        "quarantined_at": iso(m.handled_at),
    } for m in query]


def retry_quarantined(app: App, ids: Iterable[int]) -> list[Retried]:
    """Move each message back into the inbox and forget its attempts, so the daemon handles it afresh."""
    results = []
    for incoming_id in ids:
        try:
            results.append(_retry_quarantined(app, incoming_id))
        except MailboxError as exc:   # rolled back: the row is still quarantined
            results.append(Retried(incoming_id, f"message #{incoming_id}: {exc}"))
    return results


def _retry_quarantined(app: App, incoming_id: int) -> Retried:
    """The row is reset and the message moved in one transaction: should the move fail, the
    row stays quarantined; should the daemon see the message before the commit, it waits
    for this transaction (its first write is to this row) and then finds the row reset."""
    with app.db.atomic():
        row = IncomingMessage.get_or_none(IncomingMessage.id == incoming_id)
        if row is None:
            return Retried(incoming_id, f"no incoming message #{incoming_id}")
        if row.outcome != Outcome.quarantined.value:
            return Retried(incoming_id, f"message #{incoming_id} is not quarantined ({row.outcome or 'waiting'})")
        (IncomingMessage
         .update(attempts=0, handled_at=None, outcome=None, folder=None)
         .where((IncomingMessage.id == row.id) & (IncomingMessage.outcome == Outcome.quarantined.value))
         .execute())
        content_hash = row.key[len("sha256:"):] if row.key.startswith("sha256:") else None
        new_key = app.mailbox.restore(row.mailbox_key, message_id=row.message_id, content_hash=content_hash)
        IncomingMessage.update(mailbox_key=new_key).where(IncomingMessage.id == row.id).execute()
    log.event(events.MESSAGE_REQUEUED, key=new_key, incoming=row.id, message_id=row.message_id, sender=row.sender,
              by="admin")
    return Retried(incoming_id)


