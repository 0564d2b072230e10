"""The embedded default: a Maildir read as the inbox, a Maildir written as the outbox (DESIGN §5).

Filing is one rename into a Maildir++ subfolder (`.Processed/cur/`), so a message is
always in exactly one place. An outgoing email's file name derives from its fixed
Message-ID, so writing it again after a crash replaces it instead of adding a copy.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from daemon.errors import MailboxError, SessionFailure, os_reason
from daemon.mail.mailbox import Claim, InboxMessage
from models.message import Folder
from daemon.mail.backoff import SessionBackoff

_SUBDIRS = ("tmp", "new", "cur")
WATCH_STEP = 0.2            # seconds between two looks at the inbox while waiting
CLAIM_BATCH = 20            # file names claimed in one statement before they are read (DESIGN §8); small,
                            # so that instances share a backlog in many pieces (a file has no FETCH to batch)
CLOCK_TICK_NS = 2 * 10**9   # file systems stamp changes with a coarse clock (1 ms on ext4, 2 s on FAT)


def ensure_maildir(path: Path) -> None:
    for sub in _SUBDIRS:
        (path / sub).mkdir(parents=True, exist_ok=True)


class MaildirMailbox:
    """Reads `path/new` and `path/cur`; files into `.Processed`, `.Rejected`, `.Quarantine`."""

    def __init__(self, path: Path, folders: dict[Folder, str], *, max_message_size: int) -> None:
        self.path = path
        self.max_message_size = max_message_size
        self._folders = {folder: path / f".{name}" for folder, name in folders.items()}
        self._where: dict[str, Path] = {}
        self._listed: frozenset[str] = frozenset()     # names the last pass found waiting
        self._looked: tuple[int, int] | None = None    # the directories' change times at that look
        self.last_contact = time.monotonic()
        try:
            ensure_maildir(path)
            for folder_path in self._folders.values():
                ensure_maildir(folder_path)
                (folder_path / "maildirfolder").touch(exist_ok=True)
        except OSError as exc:
            raise MailboxError(f"cannot create the inbox Maildir {path}: {os_reason(exc, path)} "
                               "(mailbox.path must name a folder this user can write)") from None

    def fetch(self, claim: Claim | None = None) -> Iterator[InboxMessage]:
        """The waiting files, oldest first; with `claim`, each batch of names is claimed before
        any of them is read."""
        waiting = self._waiting()
        for start in range(0, len(waiting), CLAIM_BATCH):
            batch = waiting[start:start + CLAIM_BATCH]
            if claim is not None:
                mine = claim([entry.name for entry in batch])
                batch = [entry for entry in batch if entry.name in mine]
            yield from self._read(batch)

    def _read(self, entries: list[os.DirEntry[str]]) -> Iterator[InboxMessage]:
        for entry in entries:
            try:
                size = entry.stat().st_size
                with open(entry.path, "rb") as fh:
                    truncated = size > self.max_message_size
                    raw = _read_header(fh) if truncated else fh.read()
            except FileNotFoundError:
                continue  # filed meanwhile by another process
            except OSError as exc:
                raise MailboxError(f"cannot read {entry.path}: {exc.strerror}") from exc
            self._where[entry.name] = Path(entry.path)
            yield InboxMessage(key=entry.name, raw=raw, size=size, truncated=truncated)

    def _waiting(self) -> list[os.DirEntry[str]]:
        stamp = self._stamp()   # before listing: whatever changes after it shows in wait()
        entries: list[os.DirEntry[str]] = []
        for sub in ("new", "cur"):
            try:
                with os.scandir(self.path / sub) as it:
                    entries.extend(e for e in it if e.is_file() and not e.name.startswith("."))
            except OSError as exc:
                raise MailboxError(f"cannot list {self.path / sub}: {exc.strerror}") from exc
        self._listed = frozenset(e.name for e in entries)
        self._looked = stamp
        self.last_contact = time.monotonic()
        arrived = []
        for entry in entries:
            try:
                arrived.append((entry.stat().st_mtime_ns, entry.name, entry))
            except FileNotFoundError:
                continue  # filed meanwhile by another instance
        arrived.sort(key=lambda t: (t[0], t[1]))
        return [entry for _, _, entry in arrived]

    def file(self, key: str, folder: Folder) -> None:
        source = self._where.pop(key, None) or self._locate(key)
        base = key.split(":2,")[0]
        target = self._folders[folder] / "cur" / f"{base}:2,S"
        try:
            os.rename(source, target)
        except FileNotFoundError:
            if target.exists():
                return  # already filed (a retry after a crash between rename and bookkeeping)
            raise MailboxError(f"message {key} vanished from the inbox") from None
        except OSError as exc:
            raise MailboxError(f"cannot file {key} into {folder.value}: {exc.strerror}") from exc

    def file_many(self, items: Sequence[tuple[str, Folder]]) -> None:
        for key, folder in items:
            self.file(key, folder)

    def _locate(self, key: str) -> Path:
        for sub in ("new", "cur"):
            candidate = self.path / sub / key
            if candidate.exists():
                return candidate
        return self.path / "cur" / key

    def restore(self, key: str, message_id: str | None = None, content_hash: str | None = None) -> str:
        """`.Quarantine/cur/<name>:2,S` back to `new/<name>`, so it is handled afresh; returns `<name>`."""
        base = key.split(":2,")[0]
        quarantine = self._folders[Folder.quarantine]
        for sub in ("cur", "new"):
            for entry in (quarantine / sub).glob(f"{glob.escape(base)}*"):
                if entry.name.split(":2,")[0] == base:
                    try:
                        os.rename(entry, self.path / "new" / base)
                    except OSError as exc:
                        raise MailboxError(f"cannot move {key} back into the inbox: {exc.strerror}") from exc
                    return base
        raise MailboxError(f"message {key} is not in the quarantine folder {quarantine}")

    def unavailable(self) -> str | None:
        """Why the inbox cannot be read right now, or None; /healthz asks from its own thread."""
        for sub in ("new", "cur"):
            if not os.access(self.path / sub, os.R_OK | os.X_OK):
                return f"cannot read {self.path / sub}"
        return None

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Maildir has no IDLE: look for mail the last pass did not see, several times a second.

        Compared with what the pass listed, not with the inbox as the wait finds it, so mail
        delivered during a pass ends the wait at once instead of after poll_interval.
        """
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            if self._arrived():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            stop.wait(min(WATCH_STEP, left))

    def _arrived(self) -> bool:
        """Whether new/ or cur/ holds a name the last listing did not find (filing ours is no news).

        Unchanged directory change times say so for the price of two stat() calls, except within
        a tick of the file system's clock: a second delivery in the same tick keeps the time the
        last look saw, so while the times are that recent the names are compared.
        """
        stamp = self._stamp()
        if stamp == self._looked and time.time_ns() - max(stamp) > CLOCK_TICK_NS:
            return False
        try:
            names = self._names()
        except OSError:
            return True   # the next pass says what is wrong (MailboxError)
        self._looked = stamp
        return not names <= self._listed

    def _names(self) -> set[str]:
        names: set[str] = set()
        for sub in ("new", "cur"):
            with os.scandir(self.path / sub) as it:
                names.update(e.name for e in it if e.is_file() and not e.name.startswith("."))
        return names

    def _stamp(self) -> tuple[int, int]:
        try:
            return (os.stat(self.path / "new").st_mtime_ns, os.stat(self.path / "cur").st_mtime_ns)
        except OSError:
            return (0, 0)

    def close(self) -> None:
        self._where.clear()


def _read_header(fh: Iterable[bytes]) -> bytes:
    """Up to the blank line that ends the header, at most 256 KiB."""
    lines = []
    total = 0
    for line in fh:
        lines.append(line)
        total += len(line)
        if line in (b"\n", b"\r\n") or total > 262_144:
            break
    return b"".join(lines)


class MaildirTransport:
    """Every outgoing email becomes one file in `path/new/`.

    The folders are made on the first send, not when the transport is built (the CLI and
    `config check` build one too). A folder we cannot write is a SessionFailure: every
    email would fail alike, so the drain stops, the emails stay queued, and it backs off.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")
        self._made = False
        self.backoff = SessionBackoff()

    @contextlib.contextmanager
    def session(self) -> Iterator["MaildirTransport"]:
        yield self

    def send(self, raw: bytes, sender: str, recipients: Sequence[str], key: str) -> str:
        """Returns the file's name in new/, for `outbox list`."""
        name = f"{key[:24]}.{self._host}"   # a resend after a crash replaces the file
        tmp = self.path / "tmp" / name
        envelope = f"Return-Path: <{sender}>\r\nDelivered-To: {', '.join(recipients)}\r\n".encode()
        try:
            if not self._made:
                ensure_maildir(self.path)
                self._made = True
            with open(tmp, "wb") as fh:
                fh.write(envelope + raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path / "new" / name)
            return name
        except OSError as exc:
            self._made = False                     # made again next time, should it have been removed
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise SessionFailure(f"cannot write to the outbox {self.path}: {os_reason(exc, self.path)} "
                                 "(smtp.path must name a folder this user can write)") from None

    def check(self) -> None:
        """For `config check`: raises SessionFailure when the outbox folder cannot be written."""
        problem = unwritable(self.path)
        if problem is not None:
            raise SessionFailure(f"cannot write to the outbox {self.path}: {problem} "
                                 "(smtp.path must name a folder this user can write)")


def check_inbox(path: Path) -> None:
    """For `config check`: raises MailboxError when the inbox Maildir cannot be used (creates nothing)."""
    problem = unwritable(path)
    if problem is not None:
        raise MailboxError(f"cannot use the inbox Maildir {path}: {problem} "
                           "(mailbox.path must name a folder this user can write)")


def unwritable(path: Path) -> str | None:
    """Why files cannot be written into the Maildir `path` (made first when missing), or None.

    For `config check`, which creates nothing that stays: it writes a probe file (or makes a
    probe folder where `path` is still missing) and removes it at once. Only trying tells:
    root passes every permission check, yet cannot write under /proc or on a read-only mount.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return "it is a file, not a folder" if existing == path else f"{existing}: it is a file, not a folder"
    if existing == path:
        probe_in = path / "tmp" if (path / "tmp").is_dir() else path
        try:
            fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".smartacct-check-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return f"no file can be written in {probe_in}: {_refusal(exc)}"
        return None
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".smartacct-check-"))
    except OSError as exc:
        return f"no folder can be made in {existing}: {_refusal(exc)}"
    return None


def _refusal(exc: OSError) -> str:
    """Why a probe in an existing folder failed; ENOENT there means a file system that makes nothing (/proc)."""
    return "the file system allows none there" if exc.errno == errno.ENOENT else os_reason(exc, exc.filename)
