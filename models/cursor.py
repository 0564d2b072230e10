"""Where the IMAP backend left off: UIDVALIDITY and the last UID handled, per mailbox."""

from __future__ import annotations

import peewee

from models.base import BaseModel


class MailboxCursor(BaseModel):
    name = peewee.CharField(max_length=400, primary_key=True)
    uidvalidity = peewee.BigIntegerField()
    last_uid = peewee.BigIntegerField()

    class Meta:
        table_name = "mailbox_cursor"


class DbCursor:
    """The daemon.mail.imap.Cursor protocol on the database."""

    def __init__(self, name: str) -> None:
        self.name = name

    def load(self) -> tuple[int, int] | None:
        row = MailboxCursor.get_or_none(MailboxCursor.name == self.name)
        return None if row is None else (int(row.uidvalidity), int(row.last_uid))

    def save(self, uidvalidity: int, last_uid: int) -> None:
        (MailboxCursor
         .insert(name=self.name, uidvalidity=uidvalidity, last_uid=last_uid)
         .on_conflict(conflict_target=[MailboxCursor.name],
                      update={MailboxCursor.uidvalidity: uidvalidity, MailboxCursor.last_uid: last_uid})
         .execute())
