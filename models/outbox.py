"""The durable outbox: finished emails waiting to be sent, with their fixed Message-ID.

A reply code is a bearer secret (DESIGN §3): the row keeps only the hash of the email's
Message-ID, and once the email is sent its stored copy has the code and the Message-ID
masked (`redacted`), so the database holds no usable code for emails already out.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import re

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
    message_id_hash = SafeCharField(max_length=255, unique=True)   # sha256 hex of the Message-ID
    body = peewee.BlobField()                                       # the finished email; redacted once sent
    state = SafeCharField(max_length=16, default=OutboxState.queued.value)
    attempts = peewee.IntegerField(default=0)
    created_at = UtcDateTimeField()
    next_try_at = UtcDateTimeField()
    sent_at = UtcDateTimeField(null=True)
    last_error = SafeTextField(null=True)
    topic = SafeCharField(max_length=200, null=True)
    maildir_file = SafeCharField(max_length=255, null=True)   # the file it became, with the Maildir backend
    leased_by = peewee.CharField(max_length=120, null=True)   # the process sending it now (App.instance)

    class Meta:
        table_name = "outbox"


MASK = b"[redacted]"
_HEAD_LIMIT = 16_384                      # our own header is far shorter
_REPLY_CODE = re.compile(rb"^Reply-To:[^\r\n]*\+([a-z2-7]{26})@", re.MULTILINE | re.IGNORECASE)
_ID_FIELDS = re.compile(rb"^(?:Message-ID|In-Reply-To|References):([^\r\n]*)", re.MULTILINE | re.IGNORECASE)
_SOFT_BREAK = re.compile(b"=\r\n")            # quoted-printable's soft line break
_OWN_ID = re.compile(rb"^Message-ID:[ \t]*<[^<>@\s]+@([^<>@\s]+)>", re.MULTILINE | re.IGNORECASE)


def message_id_hash(message_id: str) -> str:
    return hashlib.sha256(message_id.strip().strip("<>").encode("utf-8", "replace")).hexdigest()


def redacted(raw: bytes) -> bytes:
    """Our own email with its reply code and every Message-ID of ours (its own, and those of our
    earlier emails it threads to) masked wherever they appear, also where quoted-printable broke
    a line inside them (`=` CRLF).

    Searched for in the bytes with the soft line breaks taken out, then masked in the bytes as they
    are: no pattern compiled per secret (that cost more than composing the email)."""
    secrets = secrets_in(raw)
    if not secrets:
        return raw
    width = len(_SOFT_BREAK.pattern)
    flat = _SOFT_BREAK.sub(b"", raw)
    # Where each soft break was in flat; the byte at i in flat is at i + width × (breaks at or before i) in raw.
    breaks = [m.start() - width * n for n, m in enumerate(_SOFT_BREAK.finditer(raw))]

    def in_raw(i: int) -> int:
        return i + width * bisect.bisect_right(breaks, i)

    spans = []
    for secret in secrets:
        i = flat.find(secret)
        while i >= 0:
            spans.append((in_raw(i), in_raw(i + len(secret) - 1) + 1))
            i = flat.find(secret, i + len(secret))
    masked, done = [], 0
    for start, end in sorted(spans):
        if start >= done:              # overlapping spans make one mask
            masked += [raw[done:start], MASK]
        done = max(done, end)
    return b"".join([*masked, raw[done:]])


def secrets_in(raw: bytes) -> list[bytes]:
    """What redacted() masks: the reply code and our own Message-IDs, as the header names them."""
    end = raw.find(b"\r\n\r\n", 0, _HEAD_LIMIT)
    head = raw[:end if end >= 0 else _HEAD_LIMIT]
    secrets = [m.group(1) for m in _REPLY_CODE.finditer(head)]
    own = _OWN_ID.search(head)
    if own is not None:
        # Only where Message-IDs stand: `From: Smart Accounts <smart-accounts@…>` has the same form.
        ids = b" ".join(m.group(1) for m in _ID_FIELDS.finditer(re.sub(rb"\r\n[ \t]+", b" ", head)))
        secrets += re.findall(rb"<([^<>@\s]+)@" + re.escape(own.group(1)) + rb">", ids, re.IGNORECASE)
    return list(dict.fromkeys(secrets))
