"""The durable outbox: finished emails waiting to be sent, with their fixed Message-ID."""

from __future__ import annotations

import enum

import peewee

from models.base import BaseModel
from models.fields import UtcDateTimeField


class OutboxState(enum.StrEnum):
    queued = "queued"
    sent = "sent"
    failed = "failed"


class OutboxRow(BaseModel):
    request_id = peewee.IntegerField(null=True)
    kind = peewee.CharField(max_length=40)
    recipient = peewee.CharField(max_length=320)
    message_id = peewee.CharField(max_length=255, unique=True)
    raw = peewee.BlobField()
    state = peewee.CharField(max_length=16, default=OutboxState.queued.value)
    attempts = peewee.IntegerField(default=0)
    created_at = UtcDateTimeField()
    next_try_at = UtcDateTimeField()
    sent_at = UtcDateTimeField(null=True)
    last_error = peewee.TextField(null=True)
    topic = peewee.CharField(max_length=200, null=True)

    class Meta:
        table_name = "outbox"
