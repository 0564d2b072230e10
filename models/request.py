"""A Smart Account request: the form's fields, its parties, its state and its deadlines."""

from __future__ import annotations

import json
import re

import peewee

from models.base import BaseModel
from models.fields import UtcDateTimeField
from models.state import State

REF_RE = re.compile(r"\bSA-(\d{6,})\b", re.IGNORECASE)


class Request(BaseModel):
    state = peewee.CharField(max_length=32)
    language = peewee.CharField(max_length=2)
    partner_email = peewee.CharField(max_length=320)
    account_name = peewee.TextField()
    customer_email = peewee.CharField(max_length=320)
    account_domain = peewee.CharField(max_length=255)
    note_to_customer = peewee.TextField(default="")
    user_emails_json = peewee.TextField(column_name="user_emails", default="[]")
    note_to_users = peewee.TextField(default="")
    created_at = UtcDateTimeField()
    updated_at = UtcDateTimeField()
    review_expires_at = UtcDateTimeField(null=True)
    confirmed_at = UtcDateTimeField(null=True)
    expires_at = UtcDateTimeField(null=True)
    reminders_sent = peewee.IntegerField(default=0)
    accepted_at = UtcDateTimeField(null=True)
    closed_at = UtcDateTimeField(null=True)
    # The next moment a scheduled check has work for this request; NULL when none (indexed).
    due_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "request"

    @property
    def ref(self) -> str:
        return format_ref(self.id)

    @property
    def user_emails(self) -> list[str]:
        return list(json.loads(self.user_emails_json))

    @user_emails.setter
    def user_emails(self, value: list[str] | tuple[str, ...]) -> None:
        self.user_emails_json = json.dumps(list(value))

    @property
    def state_enum(self) -> State:
        return State(self.state)


def format_ref(request_id: int) -> str:
    return f"SA-{request_id:06d}"


def parse_ref(ref: str) -> int | None:
    """"SA-000042" -> 42; None for anything else."""
    m = REF_RE.fullmatch(ref.strip())
    return int(m.group(1)) if m else None
