"""The timeline of a request: what happened, when, shown by `requests show`."""

from __future__ import annotations

import json
from typing import Any

import peewee

from models.base import BaseModel
from models.fields import SafeCharField, SafeTextField, UtcDateTimeField


class Event(BaseModel):
    id = peewee.AutoField()      # peewee's implicit key, declared so type checkers see it
    request_id = peewee.IntegerField(index=False)
    at = UtcDateTimeField()
    name = SafeCharField(max_length=64)
    detail_json = SafeTextField(column_name="detail", default="{}")

    class Meta:
        table_name = "event"

    @property
    def detail(self) -> dict[str, Any]:
        return dict(json.loads(self.detail_json))
