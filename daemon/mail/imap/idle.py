"""Waiting for new mail: IDLE where the server offers it (RFC 2177), else sleeping until the next poll.

IDLE is explicit steps, each with a timeout: NOOP (keepalive, and news that came before),
a UID SEARCH for mail announced during an earlier command, IDLE, `idle_check` in steps of
at most a second (so a stop request is noticed within one), DONE, whose answer counts too:
Dovecot tells of mail that came between our last command and IDLE only then, so the first
round of a wait lasts a second. It is renewed every `idle_renew` seconds: firewalls drop
quiet connections. A lost connection is reopened here,
with the connection's backoff, so the loop's next fetch() finds it open.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from daemon.errors import MailboxError
from daemon.mail.imap.connection import IMAP_ERRORS, Connection
from daemon.mail.imap.cursor import UidCursor

IDLE_RENEW = 300.0        # re-issue IDLE (with a NOOP) every 5 min
FIRST_ROUND = 1.0         # the first IDLE round of a wait: Dovecot tells of mail that came between our
                          # last command and IDLE only at DONE, so that round ends soon to hear it


class Waiter:
    """Blocks the loop between passes on the mailbox's one connection."""

    def __init__(self, conn: Connection, cursor: UidCursor, *, idle_renew: float) -> None:
        self._conn = conn
        self._cursor = cursor
        self._idle_renew = idle_renew

    def wait(self, timeout: float, stop: threading.Event, last_fetch: float) -> None:
        """Until new mail, `timeout`, or `stop`; `last_fetch` (monotonic) times the next poll."""
        conn, cfg = self._conn, self._conn.cfg
        deadline = time.monotonic() + max(0.0, timeout)
        rounds = 0
        while not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                return
            if conn.client is None:
                if now < conn.next_attempt:
                    stop.wait(min(conn.next_attempt, deadline) - now)
                    continue
                try:
                    conn.connect()
                except MailboxError:
                    continue                  # logged; the next attempt is scheduled
                return                        # reconnected: the caller's fetch() catches up
            if not (cfg.idle and b"IDLE" in conn.caps):
                due = last_fetch + cfg.poll_interval.total_seconds()
                stop.wait(max(0.0, min(due, deadline) - now))
                return
            if self._idle(deadline, stop, min(FIRST_ROUND, self._idle_renew) if rounds == 0 else self._idle_renew):
                return
            rounds += 1

    def _idle(self, deadline: float, stop: threading.Event, length: float) -> bool:
        """One IDLE round of at most `length` seconds; True when mail arrived."""
        conn = self._conn
        client = conn.client
        assert client is not None
        try:
            _text, responses = client.noop()     # keepalive, and news that came before IDLE
            conn.answered()
            if has_news(responses):
                return True
            # An EXISTS announced during an earlier command (a MOVE, say) was swallowed with that
            # command's answer, and IDLE only reports what comes after it: ask once, explicitly.
            seen = self._cursor.seen_up_to
            if any(int(u) > seen for u in client.search(["UID", f"{seen + 1}:*"])):
                return True
            client.idle()
            started = time.monotonic()
            news = False
            try:
                while not stop.is_set():
                    left = min(deadline, started + length) - time.monotonic()
                    if left <= 0:
                        break
                    step = min(1.0, left)
                    asked = time.monotonic()
                    responses = client.idle_check(timeout=step)
                    if responses:
                        conn.answered()
                    if has_news(responses):
                        news = True
                        break
                    if not responses and time.monotonic() - asked < step / 2:
                        break                 # readable yet silent: EOF; idle_done() will tell
            finally:
                _text, ended = client.idle_done()
            conn.answered()
            return news or has_news(ended)     # told at DONE: mail that came just before IDLE
        except IMAP_ERRORS as exc:
            conn.lost(exc)
            return False


def has_news(responses: Sequence[Any]) -> bool:
    """An untagged EXISTS, or a RECENT count above zero."""
    for response in responses:
        if isinstance(response, tuple) and len(response) >= 2:
            if response[1] == b"EXISTS" or (response[1] == b"RECENT" and response[0]):
                return True
    return False
