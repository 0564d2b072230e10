"""One IMAP session on the inbox folder: connect, TLS, log in, select; reopened with backoff.

Every command goes through `do()`, which translates imapclient's errors into MailboxError
(socket and TLS errors in the words of daemon.mail.connect) and turns a lost connection into
a scheduled reconnect: one log line per failed attempt, and wrong credentials wait the cap.
"""

from __future__ import annotations

import random
import ssl
import time
from typing import Any, Callable, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout

from daemon import events, log
from daemon.config import MailboxConfig
from daemon.errors import MailboxAuthError, MailboxError
from daemon.mail.backoff import backoff_delay
from daemon.mail.connect import Server, connect_failure, describe, starttls_failure
from daemon.mail.imap.cursor import UidCursor
from daemon.mail.imap.folders import create_missing, inbox_missing
from daemon.mail.oauth2 import TokenCommand

T = TypeVar("T")

# imaplib's abort (IMAPClientAbortError) and socket/TLS errors (OSError) mean the connection is gone.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (IMAPClientAbortError, OSError, EOFError)
# Everything a command can raise: the connection gone, or the server's NO/BAD.
IMAP_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, IMAPClientError)


class Connection:
    """The one connection to the server, its health (for /healthz and /metrics) and its backoff."""

    def __init__(self, cfg: MailboxConfig, cursor: UidCursor, *, connect_timeout: float, read_timeout: float,
                 ssl_context: ssl.SSLContext | None, backoff_cap: float) -> None:
        self.cfg = cfg
        self.server = Server("mailbox", cfg.host, cfg.effective_port, connect_timeout)
        self._cursor = cursor
        self._timeout = SocketTimeout(connect=connect_timeout, read=read_timeout)
        self._ssl_context = ssl_context
        self._backoff_cap = backoff_cap
        self._rng = random.Random()
        self.client: IMAPClient | None = None
        self.caps: frozenset[bytes] = frozenset()
        self._failures = 0                 # connection attempts failed in a row
        self.next_attempt = 0.0            # monotonic time of the next connection attempt
        self._last_error = ""
        self._ever_connected = False
        self.last_contact: float | None = None   # time.monotonic() of the last server answer
        self.reconnects = 0
        self.token_command = TokenCommand(cfg.oauth2_token_command) if cfg.oauth2_token_command else None

    def ensure(self) -> IMAPClient:
        """The open client; a new one unless the backoff says not yet."""
        if self.client is not None:
            return self.client
        wait = self.next_attempt - time.monotonic()
        if wait > 0:
            raise MailboxError(f"not connected to {self.server.where} (next attempt in {wait:.0f}s): "
                               f"{self._last_error}")
        return self.connect()

    def connect(self) -> IMAPClient:
        """Open, log in, select the folder, check UIDVALIDITY, create the filing folders."""
        try:
            client = self.login()
            try:
                info = self._prepare(client)
            except BaseException:
                logout(client)
                raise
        except MailboxError as exc:
            self._failed(exc, auth=isinstance(exc, MailboxAuthError))
            raise
        self.client = client
        self.answered()
        validity = int(info[b"UIDVALIDITY"])
        self._cursor.selected(validity)
        if self._ever_connected:
            self.reconnects += 1
            log.event(events.IMAP_RECONNECTED, host=self.cfg.host, attempts=self._failures)
        else:
            log.event(events.IMAP_CONNECTED, host=self.cfg.host, port=self.cfg.effective_port,
                      folder=self.cfg.folder, uidvalidity=validity, last_uid=self._cursor.last_uid,
                      idle=b"IDLE" in self.caps, move=b"MOVE" in self.caps)
        self._ever_connected = True
        self._failures = 0
        return client

    def login(self) -> IMAPClient:
        """A new logged-in client (not kept); every failure becomes a MailboxError that says what to check."""
        cfg, where = self.cfg, self.server.where
        context = self._ssl_context or ssl.create_default_context()
        try:
            client = IMAPClient(cfg.host, cfg.effective_port, ssl=cfg.security == "ssl",
                                ssl_context=context, timeout=self._timeout)
        except OSError as exc:                # socket and TLS errors
            raise MailboxError(connect_failure(exc, self.server)) from None
        except IMAPClientError as exc:
            raise MailboxError(f"{where} does not speak IMAP: {describe(exc)}") from None
        try:
            if cfg.security == "starttls":
                self._starttls(client, context)
            self._login(client)
        except BaseException:
            logout(client)
            raise
        return client

    def do(self, what: str, command: Callable[[IMAPClient], T]) -> T:
        """Run one command; translate errors; a lost connection schedules a reconnect."""
        client = self.ensure()
        try:
            result = command(client)
        except CONNECTION_ERRORS as exc:
            self.lost(exc)
            raise MailboxError(f"connection to {self.server.where} lost during {what}: {describe(exc)}") from None
        except IMAPClientError as exc:
            raise MailboxError(f"{what} failed on {self.server.where}: {describe(exc)}") from None
        self.answered()
        return result

    def answered(self) -> None:
        """The server just answered: the mailbox is alive for /healthz."""
        self.last_contact = time.monotonic()

    def lost(self, exc: BaseException) -> None:
        client, self.client = self.client, None
        if client is not None:
            shutdown(client)
        self._failed(exc)

    def unavailable(self) -> str | None:
        """Why the server cannot be reached right now, or None; /healthz asks from its own thread."""
        if self.client is not None:
            return None
        return self._last_error or "not connected yet"

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            logout(client)

    def _starttls(self, client: IMAPClient, context: ssl.SSLContext) -> None:
        try:
            client.starttls(context)
        except CONNECTION_ERRORS as exc:      # TLS errors too: they are OSErrors
            raise MailboxError(starttls_failure(exc, self.server)) from None
        except IMAPClientError as exc:
            raise MailboxError(f"{self.server.where} does not offer STARTTLS ({describe(exc)}): "
                               "use security = \"ssl\" or \"none\" (mailbox.security)") from None

    def _login(self, client: IMAPClient) -> None:
        cfg, where = self.cfg, self.server.where
        try:
            if self.token_command is not None:
                client.oauth2_login(cfg.username, self.token_command.token(MailboxAuthError))
            else:
                client.login(cfg.username, cfg.password or "")
        except LoginError as exc:
            how = "the XOAUTH2 access token" if self.token_command is not None else "the password"
            raise MailboxAuthError(
                f"{where} refused the login as {cfg.username}: wrong username or {how}? "
                f"(server said: {describe(exc)})") from None
        except CONNECTION_ERRORS as exc:
            raise MailboxError(f"connection to {where} lost during login: {describe(exc)}") from None
        except IMAPClientError as exc:
            raise MailboxError(f"{where} refused the login as {cfg.username}: {describe(exc)}") from None

    def _prepare(self, client: IMAPClient) -> dict[bytes, Any]:
        """Select the folder (it must exist) and create missing filing folders."""
        cfg, where = self.cfg, self.server.where
        try:
            if not client.folder_exists(cfg.folder):
                raise MailboxError(inbox_missing(cfg, where))
            create_missing(client, cfg)
            info: dict[bytes, Any] = client.select_folder(cfg.folder)
            self.caps = frozenset(bytes(c).upper() for c in client.capabilities())
        except CONNECTION_ERRORS as exc:
            raise MailboxError(f"connection to {where} lost: {describe(exc)}") from None
        except IMAPClientError as exc:
            raise MailboxError(f"{where} refused to open folder {cfg.folder!r}: {describe(exc)}") from None
        return info

    def _failed(self, exc: BaseException, *, auth: bool = False) -> None:
        """Schedule the next attempt; one log line per attempt. Wrong credentials wait the cap."""
        self._failures += 1
        delay = self._backoff_cap if auth else backoff_delay(self._failures, self._rng, cap=self._backoff_cap)
        self.next_attempt = time.monotonic() + delay
        self._last_error = describe(exc)
        log.event(events.IMAP_RECONNECTING, host=self.cfg.host, attempt=self._failures,
                  delay=f"{delay:.1f}s", error=self._last_error)


def logout(client: IMAPClient) -> None:
    """LOGOUT, or just close the socket when the server is gone: never raises."""
    try:
        client.logout()
    except IMAP_ERRORS:
        shutdown(client)


def shutdown(client: IMAPClient) -> None:
    """Close the socket without a word to the server: never raises."""
    try:
        client.shutdown()
    except OSError:
        pass                                  # already gone
