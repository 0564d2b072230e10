"""The IMAP inbox (DESIGN §5, backend "imap"): imapclient over TLS, STARTTLS or plain.

New mail is found by UID above a saved cursor and fetched in batches, so a restart
resumes without refetching. A message leaves the folder only through file(), which
the ingest path calls after the message's commit (DESIGN §4). Lost connections are
retried with capped exponential backoff; wait() does the reconnecting, so a stop
request is always noticed within a second. Library errors become MailboxError here.
"""

from __future__ import annotations

import hashlib
import math
import random
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.imapclient import DELETED, SocketTimeout

from daemon import log
from daemon.config import MailboxConfig
from daemon.errors import MailboxAuthError, MailboxError
from daemon.mail.backoff import RECONNECT_CAP, backoff_delay
from daemon.mail.connect import Server, connect_failure, describe as _describe, starttls_failure
from daemon.mail.mailbox import InboxMessage
from models.message import Folder
from daemon.mail.oauth2 import TokenCommandError, token_from_command

T = TypeVar("T")

IDLE_RENEW = 300.0        # re-issue IDLE (with a NOOP) every 5 min: firewalls drop quiet connections
FETCH_BATCH = 250         # UIDs per body FETCH
FETCH_BATCH_BYTES = 50_000_000
SIZE_BATCH = 500          # UIDs per RFC822.SIZE FETCH
READ_TIMEOUT = 120.0

# imaplib's abort (IMAPClientAbortError) and socket/TLS errors (OSError) mean the connection is gone.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (IMAPClientAbortError, OSError, EOFError)


class Cursor(Protocol):
    """Where the inbox was left: stored durably by the caller (the database)."""

    def load(self) -> tuple[int, int] | None:
        """(uidvalidity, last_uid) saved before, or None."""

    def save(self, uidvalidity: int, last_uid: int) -> None:
        """Remember that every yielded UID up to last_uid has been filed."""


@dataclass(frozen=True)
class CheckResult:
    """What `smartacct config check` can tell the admin about the server."""

    idle: bool
    move: bool
    uidplus: bool


def parse_key(key: str) -> tuple[int, int]:
    """"UIDVALIDITY:UID" -> (uidvalidity, uid)."""
    try:
        validity, uid = key.split(":")
        return int(validity), int(uid)
    except ValueError:
        raise MailboxError(f"not an IMAP message key (UIDVALIDITY:UID): {key!r}") from None


class ImapMailbox:
    """Mailbox on an IMAP folder; one connection, reopened with backoff when lost."""

    def __init__(
        self,
        cfg: MailboxConfig,
        cursor: Cursor,
        *,
        connect_timeout: float = 30.0,
        read_timeout: float = READ_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        use_move: bool = True,
        batch_size: int = FETCH_BATCH,
        idle_renew: float = IDLE_RENEW,
        backoff_cap: float = RECONNECT_CAP,
    ) -> None:
        self._cfg = cfg
        self._cursor = cursor
        self._timeout = SocketTimeout(connect=connect_timeout, read=read_timeout)
        self._server = Server("mailbox", cfg.host, cfg.effective_port, connect_timeout)
        self._ssl_context = ssl_context
        self._use_move = use_move
        self._batch_size = max(1, batch_size)
        self._idle_renew = idle_renew
        self._backoff_cap = backoff_cap
        self._rng = random.Random()
        self._client: IMAPClient | None = None
        self._caps: frozenset[bytes] = frozenset()
        saved = cursor.load()
        self._uidvalidity: int | None = saved[0] if saved else None
        self._last_uid = saved[1] if saved else 0
        self._saved = saved
        self._pending: set[int] = set()    # yielded, not filed yet
        self._seen_up_to = 0               # the highest UID the last fetch() found
        self._filed: set[int] = set()      # filed, above the cursor
        self._failures = 0                 # connection attempts failed in a row
        self._next_attempt = 0.0           # monotonic time of the next connection attempt
        self._last_error = ""
        self._ever_connected = False
        self._last_fetch = -math.inf
        self.last_contact: float | None = None   # time.monotonic() of the last server answer
        self.reconnects = 0
        self.oauth2_failed_at: float | None = None   # time.monotonic() of the last token command failure

    # ------------------------------------------------------------------ Mailbox

    def fetch(self) -> Iterator[InboxMessage]:
        """Every message above the cursor in UID order: SIZE first, then bodies in batches."""
        self._last_fetch = time.monotonic()
        self._ensure_connected()
        low = self._last_uid + 1
        self._do("NOOP", lambda c: c.noop())         # lets the server announce mail delivered since
        found = self._do("UID SEARCH", lambda c: c.search(["UID", f"{low}:*"]))
        uids = sorted(int(u) for u in found if int(u) > self._last_uid)
        self._seen_up_to = max(uids, default=self._last_uid)
        self._pending &= set(uids)        # pending ones that vanished were filed by someone else
        for start in range(0, len(uids), SIZE_BATCH):
            chunk = uids[start:start + SIZE_BATCH]
            sizes = self._sizes(chunk)
            for batch in self._batches(chunk, sizes):
                try:
                    for message in self._fetch_batch(batch, sizes):
                        self._pending.add(parse_key(message.key)[1])
                        yield message
                finally:
                    self._save_cursor()

    def file(self, key: str, folder: Folder) -> None:
        self.file_many([(key, folder)])

    def file_many(self, items: Sequence[tuple[str, Folder]]) -> None:
        """One UID MOVE per target folder for a whole batch: a MOVE per message makes Dovecot
        rewrite its index every time, which grows with the mailbox (quadratic over a backlog)."""
        self._ensure_connected()
        by_target: dict[str, list[int]] = {}
        for key, folder in items:
            validity, uid = parse_key(key)
            if validity != self._uidvalidity:
                log.warning("imap.file_skipped", key=key, reason="uidvalidity_changed")
                continue  # fetched again under its new key; its database row makes that a duplicate
            by_target.setdefault(self.folder_name(folder), []).append(uid)
        for target, uids in by_target.items():
            self._file_uids(uids, target)
            for uid in uids:
                self._pending.discard(uid)
                if uid > self._last_uid:
                    self._filed.add(uid)

    def _file_uids(self, uids: list[int], target: str) -> None:
        try:
            self._file(uids, target)
        except MailboxError as exc:
            if self._client is None:
                raise
            if "EXPUNGEISSUED" in str(exc):
                # Another session (another instance) moved some of them first. A NOOP tells this
                # session about those expunges; the retry then skips the UIDs that are gone.
                self._do("NOOP", lambda c: c.noop())
            elif not self._do("LIST", lambda c: c.folder_exists(target)):
                self._do("CREATE", lambda c: _create_folder(c, target))   # deleted while we ran
            else:
                raise
            self._file(uids, target)

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """IDLE (or sleep until the next poll) until new mail, `timeout`, or `stop`; reconnects."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                return
            if self._client is None:
                if now < self._next_attempt:
                    stop.wait(min(self._next_attempt, deadline) - now)
                    continue
                try:
                    self._connect()
                except MailboxError:
                    continue                  # logged; the next attempt is scheduled
                return                        # reconnected: the caller's fetch() catches up
            if not (self._cfg.idle and b"IDLE" in self._caps):
                due = self._last_fetch + self._cfg.poll_interval.total_seconds()
                stop.wait(max(0.0, min(due, deadline) - now))
                return
            if self._idle(deadline, stop):
                return

    def restore(self, key: str, message_id: str | None = None, content_hash: str | None = None) -> str:
        """MOVE a message from the quarantine folder back to the inbox folder (`quarantine retry`).

        Its UID there is not the one it had in the inbox, so it is found by its Message-ID
        (UID SEARCH HEADER), or by its content hash when it has none. Returns its new key.
        """
        self._ensure_connected()
        quarantine, inbox = self._cfg.quarantine_folder, self._cfg.folder
        self._do("SELECT", lambda c: c.select_folder(quarantine))
        try:
            uid = self._find(message_id, content_hash)
            if uid is None:
                raise MailboxError(f"message {key} is not in the quarantine folder {quarantine!r} on {self._where()}")
            self._file(uid, inbox)
        finally:
            try:
                self._do("SELECT", lambda c: c.select_folder(inbox))
            except MailboxError as exc:
                if self._client is not None:
                    self._lost(exc)           # the next use reconnects and selects the inbox
        new_uid = self._find(message_id, None) if message_id else None
        return f"{self._uidvalidity}:{new_uid}" if new_uid is not None else key

    def _find(self, message_id: str | None, content_hash: str | None) -> int | None:
        """The highest UID in the selected folder with this Message-ID, or with these exact bytes."""
        if message_id:
            found = self._do("UID SEARCH", lambda c: c.search(["HEADER", "Message-ID", message_id]))
            return max((int(u) for u in found), default=None)
        if not content_hash:
            return None
        uids = sorted(int(u) for u in self._do("UID SEARCH", lambda c: c.search("ALL")))
        for start in range(0, len(uids), self._batch_size):
            chunk = uids[start:start + self._batch_size]
            data = self._do("FETCH BODY[]", lambda c: c.fetch(chunk, ["BODY.PEEK[]"]))
            for uid, item in data.items():
                if hashlib.sha256(item.get(b"BODY[]", b"")).hexdigest() == content_hash:
                    return int(uid)
        return None

    def unavailable(self) -> str | None:
        """Why the server cannot be reached right now, or None; /healthz asks from its own thread."""
        if self._client is not None:
            return None
        return self._last_error or "not connected yet"

    def close(self) -> None:
        """Save the cursor and log out; safe to call twice."""
        self._save_cursor()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.logout()
            except (*_CONNECTION_ERRORS, IMAPClientError):
                pass                          # closing anyway

    # ------------------------------------------------------------------ config check

    def check(self) -> CheckResult:
        """Connect, log in, look for the folder; raises MailboxError with a plain explanation."""
        client = self._open()
        try:
            folder = self._cfg.folder
            try:
                exists = client.folder_exists(folder)
                caps = client.capabilities()
            except _CONNECTION_ERRORS as exc:
                raise MailboxError(f"connection to {self._where()} lost: {_describe(exc)}") from None
            except IMAPClientError as exc:
                raise MailboxError(f"{self._where()} answered an error: {_describe(exc)}") from None
            if not exists:
                raise MailboxError(
                    f"folder {folder!r} does not exist for {self._cfg.username} on {self._where()} "
                    "(mailbox.folder)")
            return CheckResult(idle=b"IDLE" in caps, move=b"MOVE" in caps, uidplus=b"UIDPLUS" in caps)
        finally:
            _logout(client)

    def folder_name(self, folder: Folder) -> str:
        return {
            Folder.processed: self._cfg.processed_folder,
            Folder.rejected: self._cfg.rejected_folder,
            Folder.quarantine: self._cfg.quarantine_folder,
        }[folder]

    # ------------------------------------------------------------------ connection

    def _where(self) -> str:
        return f"{self._cfg.host}:{self._cfg.effective_port}"

    def _ensure_connected(self) -> IMAPClient:
        if self._client is not None:
            return self._client
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            raise MailboxError(f"not connected to {self._where()} (next attempt in {wait:.0f}s): {self._last_error}")
        return self._connect()

    def _connect(self) -> IMAPClient:
        """Open, log in, select the folder, check UIDVALIDITY, create the filing folders."""
        try:
            client = self._open()
            try:
                info = self._prepare(client)
            except BaseException:
                _logout(client)
                raise
        except MailboxError as exc:
            self._failed(exc, auth=isinstance(exc, MailboxAuthError))
            raise
        self._client = client
        self.last_contact = time.monotonic()
        validity = int(info[b"UIDVALIDITY"])
        if self._uidvalidity is not None and validity != self._uidvalidity:
            log.warning("imap.uidvalidity_changed", folder=self._cfg.folder, old=self._uidvalidity,
                        new=validity, action="full_resync")
            self._last_uid = 0
            self._seen_up_to = 0
            self._pending.clear()
            self._filed.clear()
        self._uidvalidity = validity
        self._save_cursor()
        if self._ever_connected:
            self.reconnects += 1
            log.event("imap.reconnected", host=self._cfg.host, attempts=self._failures)
        else:
            log.event("imap.connected", host=self._cfg.host, port=self._cfg.effective_port,
                      folder=self._cfg.folder, uidvalidity=validity, last_uid=self._last_uid,
                      idle=b"IDLE" in self._caps, move=b"MOVE" in self._caps)
        self._ever_connected = True
        self._failures = 0
        return client

    def _open(self) -> IMAPClient:
        """A logged-in client; every failure becomes a MailboxError that says what to check."""
        cfg, where = self._cfg, self._where()
        context = self._ssl_context or ssl.create_default_context()
        try:
            client = IMAPClient(cfg.host, cfg.effective_port, ssl=cfg.security == "ssl",
                                ssl_context=context, timeout=self._timeout)
        except OSError as exc:                # socket and TLS errors
            raise MailboxError(connect_failure(exc, self._server)) from None
        except IMAPClientError as exc:
            raise MailboxError(f"{where} does not speak IMAP: {_describe(exc)}") from None
        try:
            if cfg.security == "starttls":
                self._starttls(client, context)
            self._login(client)
        except BaseException:
            _logout(client)
            raise
        return client

    def _starttls(self, client: IMAPClient, context: ssl.SSLContext) -> None:
        where = self._where()
        try:
            client.starttls(context)
        except _CONNECTION_ERRORS as exc:     # TLS errors too: they are OSErrors
            raise MailboxError(starttls_failure(exc, self._server)) from None
        except IMAPClientError as exc:
            raise MailboxError(f"{where} does not offer STARTTLS ({_describe(exc)}): "
                               "use security = \"ssl\" or \"none\" (mailbox.security)") from None

    def _login(self, client: IMAPClient) -> None:
        cfg, where = self._cfg, self._where()
        try:
            if cfg.oauth2_token_command:
                try:
                    token = token_from_command(cfg.oauth2_token_command)
                except TokenCommandError as exc:
                    self.oauth2_failed_at = time.monotonic()
                    raise MailboxAuthError(str(exc)) from None
                client.oauth2_login(cfg.username, token)
            else:
                client.login(cfg.username, cfg.password or "")
        except LoginError as exc:
            how = "the XOAUTH2 access token" if cfg.oauth2_token_command else "the password"
            raise MailboxAuthError(
                f"{where} refused the login as {cfg.username}: wrong username or {how}? "
                f"(server said: {_describe(exc)})") from None
        except _CONNECTION_ERRORS as exc:
            raise MailboxError(f"connection to {where} lost during login: {_describe(exc)}") from None
        except IMAPClientError as exc:
            raise MailboxError(f"{where} refused the login as {cfg.username}: {_describe(exc)}") from None

    def _prepare(self, client: IMAPClient) -> dict[bytes, Any]:
        """Select the folder (it must exist) and create missing filing folders."""
        cfg, where = self._cfg, self._where()
        try:
            if not client.folder_exists(cfg.folder):
                raise MailboxError(f"folder {cfg.folder!r} does not exist for {cfg.username} on {where} "
                                   "(mailbox.folder)")
            for name in (cfg.processed_folder, cfg.rejected_folder, cfg.quarantine_folder):
                if not client.folder_exists(name):
                    _create_folder(client, name)
            info: dict[bytes, Any] = client.select_folder(cfg.folder)
            self._caps = frozenset(bytes(c).upper() for c in client.capabilities())
        except _CONNECTION_ERRORS as exc:
            raise MailboxError(f"connection to {where} lost: {_describe(exc)}") from None
        except IMAPClientError as exc:
            raise MailboxError(f"{where} refused to open folder {cfg.folder!r}: {_describe(exc)}") from None
        return info

    def _failed(self, exc: BaseException, *, auth: bool = False) -> None:
        """Schedule the next attempt; one log line per attempt. Wrong credentials wait the cap."""
        self._failures += 1
        delay = self._backoff_cap if auth else backoff_delay(self._failures, self._rng, cap=self._backoff_cap)
        self._next_attempt = time.monotonic() + delay
        self._last_error = _describe(exc)
        log.warning("imap.reconnecting", host=self._cfg.host, attempt=self._failures,
                    delay=f"{delay:.1f}s", error=self._last_error)

    def _lost(self, exc: BaseException) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.shutdown()
            except OSError:
                pass                          # already gone
        self._failed(exc)

    def _do(self, what: str, command: Callable[[IMAPClient], T]) -> T:
        """Run one command; translate errors; a lost connection schedules a reconnect."""
        client = self._ensure_connected()
        try:
            result = command(client)
        except _CONNECTION_ERRORS as exc:
            self._lost(exc)
            raise MailboxError(f"connection to {self._where()} lost during {what}: {_describe(exc)}") from None
        except IMAPClientError as exc:
            raise MailboxError(f"{what} failed on {self._where()}: {_describe(exc)}") from None
        self.last_contact = time.monotonic()
        return result

    # ------------------------------------------------------------------ fetching and filing

    def _sizes(self, uids: Sequence[int]) -> dict[int, int]:
        data = self._do("FETCH RFC822.SIZE", lambda c: c.fetch(uids, ["RFC822.SIZE"]))
        return {int(uid): int(item[b"RFC822.SIZE"]) for uid, item in data.items() if b"RFC822.SIZE" in item}

    def _batches(self, uids: Sequence[int], sizes: dict[int, int]) -> Iterator[list[int]]:
        """Runs of UIDs in order, capped by count and by bytes to download."""
        batch: list[int] = []
        total = 0
        for uid in uids:
            if uid not in sizes:
                continue                      # expunged meanwhile
            cost = min(sizes[uid], 65_536) if sizes[uid] > self._cfg.max_message_size else sizes[uid]
            if batch and (len(batch) >= self._batch_size or total + cost > FETCH_BATCH_BYTES):
                yield batch
                batch, total = [], 0
            batch.append(uid)
            total += cost
        if batch:
            yield batch

    def _fetch_batch(self, uids: list[int], sizes: dict[int, int]) -> list[InboxMessage]:
        """One FETCH for the whole messages, one for the headers of the oversized ones."""
        limit = self._cfg.max_message_size
        whole = [u for u in uids if sizes[u] <= limit]
        heads = [u for u in uids if sizes[u] > limit]
        raw: dict[int, tuple[bytes, bool]] = {}
        if whole:
            data = self._do("FETCH BODY[]", lambda c: c.fetch(whole, ["BODY.PEEK[]"]))
            # A message another session expunged meanwhile comes back with an empty body: skip it.
            raw.update((int(u), (item[b"BODY[]"], False)) for u, item in data.items() if item.get(b"BODY[]"))
        if heads:
            data = self._do("FETCH BODY[HEADER]", lambda c: c.fetch(heads, ["BODY.PEEK[HEADER]"]))
            raw.update((int(u), (item[b"BODY[HEADER]"], True)) for u, item in data.items()
                       if item.get(b"BODY[HEADER]"))
        return [
            InboxMessage(key=f"{self._uidvalidity}:{uid}", raw=raw[uid][0], size=sizes[uid], truncated=raw[uid][1])
            for uid in uids if uid in raw
        ]

    def _file(self, uids: list[int], target: str) -> None:
        if self._use_move and b"MOVE" in self._caps:
            self._do("MOVE", lambda c: c.move(uids, target))
            return
        self._do("COPY", lambda c: c.copy(uids, target))
        self._do("STORE \\Deleted", lambda c: c.add_flags(uids, [DELETED], silent=True))
        if b"UIDPLUS" in self._caps:
            self._do("UID EXPUNGE", lambda c: c.uid_expunge(uids))
        else:
            self._do("EXPUNGE", lambda c: c.expunge())

    def _save_cursor(self) -> None:
        """Advance to the highest UID below every unfiled one; write it only when it moved."""
        if self._uidvalidity is None:
            return
        ceiling = min(self._pending, default=math.inf)
        done = {uid for uid in self._filed if uid < ceiling}
        if done:
            self._last_uid = max(self._last_uid, max(done))
            self._filed -= done
        position = (self._uidvalidity, self._last_uid)
        if position != self._saved:
            self._cursor.save(*position)
            self._saved = position

    # ------------------------------------------------------------------ IDLE

    def _idle(self, deadline: float, stop: threading.Event) -> bool:
        """One IDLE round (RFC 2177) of at most idle_renew seconds; True when mail arrived."""
        client = self._client
        assert client is not None
        try:
            _text, responses = client.noop()     # keepalive, and news that came before IDLE
            self.last_contact = time.monotonic()
            if _has_news(responses):
                return True
            # An EXISTS announced during an earlier command (a MOVE, say) was swallowed with that
            # command's answer, and IDLE only reports what comes after it: ask once, explicitly.
            if any(int(u) > self._seen_up_to for u in client.search(["UID", f"{self._seen_up_to + 1}:*"])):
                return True
            client.idle()
            started = time.monotonic()
            news = False
            try:
                while not stop.is_set():
                    left = min(deadline, started + self._idle_renew) - time.monotonic()
                    if left <= 0:
                        break
                    step = min(1.0, left)
                    asked = time.monotonic()
                    responses = client.idle_check(timeout=step)
                    if responses:
                        self.last_contact = time.monotonic()
                    if _has_news(responses):
                        news = True
                        break
                    if not responses and time.monotonic() - asked < step / 2:
                        break                 # readable yet silent: EOF; idle_done() will tell
            finally:
                client.idle_done()
            self.last_contact = time.monotonic()
            return news
        except (*_CONNECTION_ERRORS, IMAPClientError) as exc:
            self._lost(exc)
            return False


def _create_folder(client: IMAPClient, name: str) -> None:
    """CREATE that takes "it exists already" as success: instances starting together race to
    create the filing folders, and the loser's folder exists, which is all we wanted."""
    try:
        client.create_folder(name)
    except IMAPClientError as exc:
        if not _already_exists(exc):
            raise
        log.event("imap.folder_exists", folder=name)
        return
    log.event("imap.folder_created", folder=name)


def _already_exists(exc: IMAPClientError) -> bool:
    """The RFC 5530 response code, or the bare text of servers that send none (older Dovecot)."""
    text = str(exc).lower()
    return "[alreadyexists]" in text or "mailbox already exists" in text


def _has_news(responses: Sequence[Any]) -> bool:
    for response in responses:
        if isinstance(response, tuple) and len(response) >= 2:
            if response[1] == b"EXISTS" or (response[1] == b"RECENT" and response[0]):
                return True
    return False


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except (*_CONNECTION_ERRORS, IMAPClientError):
        try:
            client.shutdown()
        except OSError:
            pass                              # closing anyway
