"""The Maildir backends on real directories: a wait that cannot miss a delivery (issue 11, item 6),
and an outbox the service user cannot write (issue 11, item 7)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from models.message import Folder
from daemon.mail.maildir import MaildirMailbox

FOLDERS = {Folder.processed: "Processed", Folder.rejected: "Rejected", Folder.quarantine: "Quarantine"}


def deliver(inbox: Path, name: str) -> None:
    """As an MDA does: write into tmp/, then rename into new/."""
    (inbox / "tmp" / name).write_bytes(f"Subject: {name}\r\n\r\nhello\r\n".encode())
    os.rename(inbox / "tmp" / name, inbox / "new" / name)


def wait_ends_by_itself(box: MaildirMailbox) -> bool:
    """Whether wait() returns on its own, long before its timeout of an hour (then we stop it)."""
    stop = threading.Event()
    thread = threading.Thread(target=box.wait, args=(3600, stop))
    thread.start()
    thread.join(20)          # it should take milliseconds; generous for a busy CI machine
    ended = not thread.is_alive()
    stop.set()
    thread.join()
    return ended


def test_mail_delivered_during_a_pass_ends_the_wait_at_once(tmp_path: Path) -> None:
    box = MaildirMailbox(tmp_path / "inbox", FOLDERS, max_message_size=1_000_000)
    deliver(box.path, "1.first")
    items = box.fetch()
    first = next(items)                      # the pass has listed the inbox...
    deliver(box.path, "2.second")            # ...and then this one arrives, during the pass
    assert list(items) == []
    box.file(first.key, Folder.processed)
    assert wait_ends_by_itself(box)
    (second,) = list(box.fetch())
    assert second.key == "2.second"
    box.file(second.key, Folder.processed)
    started = time.monotonic()
    box.wait(0.5, threading.Event())         # filing our own messages is no news: a full wait
    assert time.monotonic() - started >= 0.5


def test_two_deliveries_within_one_tick_of_the_file_system_clock(tmp_path: Path) -> None:
    box = MaildirMailbox(tmp_path / "inbox", FOLDERS, max_message_size=1_000_000)
    deliver(box.path, "1.first")
    new = box.path / "new"
    tick = os.stat(new)
    items = box.fetch()
    next(items)                              # listed (and left in the inbox: its retry is not due yet)
    deliver(box.path, "2.second")
    # The second rename landed in the same tick of the file system's coarse clock as the first,
    # so new/ shows the very change time the listing saw.
    os.utime(new, ns=(tick.st_atime_ns, tick.st_mtime_ns))
    assert list(items) == []
    assert wait_ends_by_itself(box)
    assert [m.key for m in box.fetch()] == ["1.first", "2.second"]
