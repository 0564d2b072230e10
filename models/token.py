"""Reply tokens (DESIGN §3): only the SHA-256 hash is stored; each acts once, for one state."""

from __future__ import annotations

import base64
import hashlib
import secrets

import peewee

from models.base import BaseModel
from models.fields import SafeCharField, UtcDateTimeField
from models.request import Request

TOKEN_BYTES = 16  # 128 random bits


class ReplyToken(BaseModel):
    id = peewee.AutoField()      # peewee's implicit key, declared so type checkers see it
    request = peewee.ForeignKeyField(Request, backref="tokens", on_delete="CASCADE")
    token_hash = SafeCharField(max_length=64, unique=True)
    message_id_hash = SafeCharField(max_length=64, null=True, unique=True)   # the email that carried it
    party = SafeCharField(max_length=16)          # "partner" | "customer"
    actions = SafeCharField(max_length=64)        # space-separated keywords it may carry
    issued_for_state = SafeCharField(max_length=32)
    issued_at = UtcDateTimeField()
    used_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "reply_token"

    def allows(self, keyword: str) -> bool:
        return keyword in self.actions.split()


def new_token() -> str:
    """26 lower-case base32 characters: survives case-folding mail servers and plus-addresses."""
    return base64.b32encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii").rstrip("=").lower()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.lower().encode("ascii", "replace")).hexdigest()
