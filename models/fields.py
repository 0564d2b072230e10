"""Column types shared by the models."""

from __future__ import annotations

import datetime as dt
from typing import Any

import peewee

UTC = dt.timezone.utc


class UtcDateTimeField(peewee.DateTimeField):
    """Aware UTC datetimes in, aware UTC datetimes out; stored naive UTC so text sorts in SQLite."""

    def db_value(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise ValueError("naive datetime: pass an aware UTC datetime")
            value = value.astimezone(UTC).replace(tzinfo=None)
        return super().db_value(value)  # type: ignore[no-untyped-call]  # untyped in peewee's stubs

    def python_value(self, value: Any) -> Any:
        value = super().python_value(value)  # type: ignore[no-untyped-call]  # untyped in peewee's stubs
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=UTC)
        return value


def _no_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL; hostile mail puts it anywhere (a Message-ID, a form value)."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class SafeTextField(peewee.TextField):
    def db_value(self, value: Any) -> Any:
        return super().db_value(_no_nul(value))  # type: ignore[no-untyped-call]  # untyped in peewee's stubs


class SafeCharField(peewee.CharField):
    def db_value(self, value: Any) -> Any:
        return super().db_value(_no_nul(value))  # type: ignore[no-untyped-call]  # untyped in peewee's stubs
