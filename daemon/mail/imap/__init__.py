"""The IMAP inbox (DESIGN §5, backend "imap"): imapclient over TLS, STARTTLS or plain.

New mail is found by UID above a saved cursor and fetched in batches, so a restart
resumes without refetching. A message leaves the folder only through file(), which
the ingest path calls after the message's commit (DESIGN §4). Lost connections are
retried with capped exponential backoff; wait() does the reconnecting, so a stop
request is always noticed within a second. Library errors become MailboxError here.

    mailbox.py     ImapMailbox: the Mailbox protocol, composed of the pieces below
    connection.py  Connection: connect, TLS, login, select; do(command); reconnect with backoff
    cursor.py      UidCursor: UIDVALIDITY and the last UID filed, saved through a Cursor store
    fetch.py       sizes, then bodies in batches capped by count and bytes
    filing.py      Filing: UID MOVE (or COPY + EXPUNGE) out of the inbox, and back from quarantine
    folders.py     the filing folders' names, and CREATE that tolerates a race
    idle.py        Waiter: IDLE in explicit steps, or sleep until the next poll
    check.py       check(): what `smartacct config check` says about the server
"""

from daemon.mail.backoff import backoff_delay
from daemon.mail.imap.check import CheckResult
from daemon.mail.imap.cursor import Cursor, parse_key
from daemon.mail.imap.mailbox import ImapMailbox

__all__ = ["CheckResult", "Cursor", "ImapMailbox", "backoff_delay", "parse_key"]
