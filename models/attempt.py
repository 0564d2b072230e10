"""The attempt ledger (DESIGN §4): a row for each message in hand or failed, keyed by its bytes.

It is written before the message is parsed, so a message that stalls or kills the
process is known on the next start, and it is deleted in the transaction that commits
the message's effects. `failures` counts only attempts whose own handling failed;
`interrupted` counts the times a process died (SIGKILL, OOM, watchdog, power) while it
held the message, which is never the message's fault.
"""

from __future__ import annotations

import peewee

from models.base import BaseModel
from models.fields import SafeTextField, UtcDateTimeField


class Attempt(BaseModel):
    raw_hash = peewee.CharField(max_length=64, primary_key=True)   # sha256 hex of the raw bytes
    mailbox_key = SafeTextField()
    holder = peewee.CharField(max_length=120, null=True)   # the process handling it now (App.instance)
    held_since = UtcDateTimeField(null=True)
    first_seen = UtcDateTimeField()
    failures = peewee.IntegerField(default=0)
    interrupted = peewee.IntegerField(default=0)
    last_error = SafeTextField(null=True)

    class Meta:
        table_name = "attempt"
