"""Incoming messages, one row per Message-ID (or content hash): the idempotency record."""

from __future__ import annotations

import enum

import peewee

from models.base import BaseModel
from models.fields import SafeCharField, SafeTextField, UtcDateTimeField


class Outcome(enum.StrEnum):
    request = "request"            # a valid request was recorded
    rejected = "rejected"          # a rejection email was sent
    reply = "reply"                # a party's reply acted on a request
    answered = "answered"          # HELP, STATUS or a friendly late-reply answer
    ignored = "ignored"            # never answered (automatic, outsider, forgery, loop guard)
    failed = "failed"              # processing raised; retried up to max_attempts
    quarantined = "quarantined"


class Folder(enum.StrEnum):
    """Where a handled message is filed; the names of the folders come from config (DESIGN §5)."""

    processed = "processed"
    rejected = "rejected"
    quarantine = "quarantine"


class IncomingMessage(BaseModel):
    id = peewee.AutoField()      # peewee's implicit key, declared so type checkers see it
    key = SafeCharField(max_length=400, unique=True)   # "mid:<Message-ID>" or "sha256:<hex>"
    message_id = SafeTextField(null=True)
    sender = SafeCharField(max_length=320, null=True)
    subject = SafeTextField(default="")
    size = peewee.IntegerField(default=0)
    mailbox_key = SafeTextField(default="")
    received_at = UtcDateTimeField()
    handled_at = UtcDateTimeField(null=True)
    outcome = SafeCharField(max_length=16, null=True)
    folder = SafeCharField(max_length=16, null=True)   # daemon.mail.mailbox.Folder value
    attempts = peewee.IntegerField(default=0)
    last_error = SafeTextField(null=True)
    request_id = peewee.IntegerField(null=True)

    class Meta:
        table_name = "incoming_message"
