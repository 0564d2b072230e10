"""The IMAP mailbox's pure pieces, fed values: the UID cursor's bookkeeping and the FETCH batching.
The pieces meet a real Dovecot in test_imap.py."""

from __future__ import annotations

import logging
import pytest

from daemon.errors import MailboxError
from daemon.mail.imap.cursor import UidCursor, parse_key
from daemon.mail.imap.fetch import FETCH_BATCH_BYTES, HEADER_COST, batches
from daemon.mail.imap.idle import has_news


class Store:
    """The Cursor store in memory: what it was given at start, and every position written since."""

    def __init__(self, saved: tuple[int, int]) -> None:
        self.saved = saved
        self.saves: list[tuple[int, int]] = []

    def load(self) -> tuple[int, int] | None:
        return self.saved

    def save(self, uidvalidity: int, last_uid: int) -> None:
        self.saves.append((uidvalidity, last_uid))

    @property
    def position(self) -> tuple[int, int]:
        return self.saves[-1] if self.saves else self.saved


def test_the_position_never_passes_a_message_offered_but_not_filed() -> None:
    store = Store((7, 10))
    cursor = UidCursor(store, "INBOX")
    cursor.selected(7)
    assert store.saves == []                              # nothing moved: nothing written
    assert cursor.found([9, 11, 12, 13]) == [11, 12, 13]
    for uid in (11, 12, 13):
        cursor.offered(uid)
    cursor.filed(11)
    cursor.filed(13)                                      # 12's commit failed: it stays offered
    cursor.save()
    assert store.position == (7, 11)
    assert cursor.found([12, 14]) == [12, 14]             # 13 is gone: filed
    cursor.filed(12)
    cursor.save()
    assert store.position == (7, 13) and store.saves == [(7, 11), (7, 13)]


def test_an_offered_message_another_session_filed_no_longer_holds_the_position() -> None:
    store = Store((7, 0))
    cursor = UidCursor(store, "INBOX")
    cursor.selected(7)
    for uid in cursor.found([1, 2]):
        cursor.offered(uid)
    cursor.filed(2)
    cursor.save()
    assert store.position == (7, 0)                       # 1 is still in hand
    assert cursor.found([]) == [] and cursor.seen_up_to == 0
    cursor.save()
    assert store.position == (7, 2)


def test_a_new_uidvalidity_starts_the_folder_over(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="smartacct")
    store = Store((12345, 40))
    cursor = UidCursor(store, "INBOX")
    cursor.selected(99)
    assert store.position == (99, 0) and cursor.last_uid == 0
    assert [r.getMessage() for r in caplog.records] == ["imap.uidvalidity_changed"]
    assert cursor.key(5) == "99:5"
    assert cursor.uid("99:5") == 5 and cursor.uid("12345:5") is None


def test_a_key_that_is_not_uidvalidity_colon_uid_is_a_mailbox_error() -> None:
    assert parse_key("3:17") == (3, 17)
    with pytest.raises(MailboxError, match="not an IMAP message key"):
        parse_key("1700000000.M1P2.host")


def test_batches_are_capped_by_count_and_bytes_and_oversized_ones_cost_their_header() -> None:
    sizes = {uid: 1000 for uid in range(1, 8)}
    assert list(batches(range(1, 8), sizes, max_message_size=10_000, batch_size=3)) == [[1, 2, 3], [4, 5, 6], [7]]
    del sizes[2]                                          # expunged meanwhile
    assert list(batches([1, 2, 3], sizes, max_message_size=10_000, batch_size=5)) == [[1, 3]]
    big = {1: FETCH_BATCH_BYTES - 10, 2: 100, 3: 10 * FETCH_BATCH_BYTES}
    assert list(batches([1, 2, 3], big, max_message_size=2 * FETCH_BATCH_BYTES, batch_size=5)) == [[1], [2, 3]]
    assert list(batches([1, 2, 3], big, max_message_size=1000, batch_size=5)) == [[1, 2, 3]]
    assert HEADER_COST * 3 < FETCH_BATCH_BYTES


def test_news_is_an_exists_or_a_recent_count() -> None:
    assert has_news([(3, b"EXISTS")]) and has_news([(1, b"RECENT")])
    assert not has_news([(0, b"RECENT"), (b"OK", b"Still here"), b"* BYE"])
