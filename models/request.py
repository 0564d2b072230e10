"""A Smart Account request: the form's fields, its parties, its state and its deadlines."""

from __future__ import annotations

import json

import peewee

from models.base import BaseModel
from models.fields import SafeCharField, SafeTextField, UtcDateTimeField
from parsers.ref import format_ref



class Request(BaseModel):
    id = peewee.AutoField()      # peewee's implicit key, declared so type checkers see it
    state = SafeCharField(max_length=32)
    language = SafeCharField(max_length=2)
    partner_email = SafeCharField(max_length=320)
    account_name = SafeTextField()
    customer_email = SafeCharField(max_length=320)
    account_domain = SafeCharField(max_length=255)
    note_to_customer = SafeTextField(default="")
    user_emails_json = SafeTextField(column_name="user_emails", default="[]")
    note_to_users = SafeTextField(default="")
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
