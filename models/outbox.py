"""The durable outbox: finished emails waiting to be sent, with their fixed Message-ID."""

from __future__ import annotations

import enum

import peewee

from models.base import BaseModel
from models.fields import SafeCharField, SafeTextField, UtcDateTimeField


class OutboxState(enum.StrEnum):
    queued = "queued"
    sent = "sent"
    failed = "failed"


class OutboxRow(BaseModel):
    id = peewee.AutoField()      # peewee's implicit key, declared so type checkers see it
    request_id = peewee.IntegerField(null=True)
    kind = SafeCharField(max_length=40)
    recipient = SafeCharField(max_length=320)
    message_id = SafeCharField(max_length=255, unique=True)
    raw = peewee.BlobField()
    state = SafeCharField(max_length=16, default=OutboxState.queued.value)
    attempts = peewee.IntegerField(default=0)
    created_at = UtcDateTimeField()
    next_try_at = UtcDateTimeField()
    sent_at = UtcDateTimeField(null=True)
    last_error = SafeTextField(null=True)
    topic = SafeCharField(max_length=200, null=True)

    class Meta:
        table_name = "outbox"
