"""The SMTP transport (DESIGN §5, backend "smtp"): smtplib over TLS, STARTTLS or plain.

One connection per outbox drain, opened on the first send and reused (STYLE §4.1).
Every smtplib and socket error is translated here (socket and TLS errors in the words of
daemon.mail.connect, which the mailbox shares): what concerns the session (connect,
TLS, login, the token command, a 421, a lost connection) becomes SessionFailure, so the
drain stops at once instead of failing every queued email alike; a 4xx answer to one
email becomes TemporaryFailure, a 5xx PermanentFailure. Each carries the server's
answer text, never a password or token.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import smtplib
from typing import Callable, Iterator, NoReturn, Sequence

from daemon import events, log
from daemon.config import SmtpConfig
from daemon.errors import PermanentFailure, SessionFailure, TemporaryFailure
from daemon.mail.oauth2 import TokenCommand, xoauth2_string
from daemon.mail.backoff import SessionBackoff
from daemon.mail.connect import Server, connect_failure, starttls_failure

CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 120.0     # servers may scan a message for a while before answering DATA


class SmtpTransport:
    """Transport through one SMTP server; session() shares one connection."""

    def __init__(
        self,
        cfg: SmtpConfig,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self._cfg = cfg
        self._server = Server("smtp", cfg.host, cfg.effective_port, connect_timeout)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._ssl_context = ssl_context
        self._token_command = TokenCommand(cfg.oauth2_token_command) if cfg.oauth2_token_command else None
        self._local_hostname = local_hostname
        self.backoff = SessionBackoff()

    @contextlib.contextmanager
    def session(self) -> Iterator[SmtpSession]:
        session = SmtpSession(self)
        try:
            yield session
        finally:
            session.close()

    def check(self) -> None:
        """Connect, authenticate and QUIT; raises DeliveryError with a plain explanation."""
        conn = self.open()
        _quit(conn)

    @property
    def oauth2_failed_at(self) -> float | None:
        """time.monotonic() of the last token command failure, for /metrics."""
        return self._token_command.failed_at if self._token_command is not None else None

    @property
    def where(self) -> str:
        return self._server.where

    def open(self) -> smtplib.SMTP:
        """A connected, TLS-protected (as configured) and authenticated connection."""
        cfg, where = self._cfg, self.where
        context = self._ssl_context or ssl.create_default_context()
        try:
            conn = self._connect(context)
        except smtplib.SMTPConnectError as exc:
            raise SessionFailure(f"{where} refused the connection: {_answer(exc.smtp_code, exc.smtp_error)}",
                                 code=exc.smtp_code) from None
        except smtplib.SMTPException as exc:     # an OSError too: before the socket errors
            raise SessionFailure(f"cannot talk to {where}: {exc}") from None
        except OSError as exc:
            raise SessionFailure(connect_failure(exc, self._server)) from None
        try:
            if conn.sock is not None:          # connected: smtplib has it
                conn.sock.settimeout(self._read_timeout)
            if cfg.security == "starttls":
                self._starttls(conn, context)
            if cfg.username:
                self._login(conn)
        except BaseException:
            _close(conn)
            raise
        log.event(events.SMTP_CONNECTED, host=cfg.host, port=cfg.effective_port)
        return conn

    def _connect(self, context: ssl.SSLContext) -> smtplib.SMTP:
        cfg = self._cfg
        if cfg.security == "ssl":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.effective_port, self._local_hostname,
                                                  timeout=self._connect_timeout, context=context)
        else:
            conn = smtplib.SMTP(cfg.host, cfg.effective_port, self._local_hostname, timeout=self._connect_timeout)
        try:
            conn.ehlo()
        except BaseException:
            _close(conn)
            raise
        return conn

    def _starttls(self, conn: smtplib.SMTP, context: ssl.SSLContext) -> None:
        where = self.where
        try:
            conn.starttls(context=context)
            conn.ehlo()
        except smtplib.SMTPNotSupportedError:
            raise SessionFailure(f"{where} does not offer STARTTLS: use security = \"ssl\" or \"none\" "
                                 "(smtp.security)") from None
        except smtplib.SMTPResponseException as exc:
            raise SessionFailure(f"{where} refused STARTTLS: {_answer(exc.smtp_code, exc.smtp_error)}",
                                 code=exc.smtp_code) from None
        except (smtplib.SMTPException, OSError) as exc:     # TLS errors are OSErrors
            raise SessionFailure(starttls_failure(exc, self._server)) from None

    def _login(self, conn: smtplib.SMTP) -> None:
        """AUTH with the password, or XOAUTH2 with the token command's output.

        A refused login is temporary: it concerns every email, and the admin can fix it
        before give_up_after.
        """
        cfg, where = self._cfg, self.where
        try:
            if self._token_command is not None:
                sasl = xoauth2_string(cfg.username, self._token_command.token(SessionFailure))
                # A failed XOAUTH2 gets a 334 with an error document; answer it empty (RFC 7628 style).
                conn.auth("XOAUTH2", lambda challenge=None: sasl if challenge is None else "")
            else:
                _login_once(conn, cfg.username, cfg.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            how = "XOAUTH2 access token" if self._token_command is not None else "password"
            raise SessionFailure(f"{where} refused the login as {cfg.username}: wrong username or {how}? "
                                 f"(server said: {_answer(exc.smtp_code, exc.smtp_error)})",
                                 code=exc.smtp_code) from None
        except smtplib.SMTPNotSupportedError:
            raise SessionFailure(f"{where} offers no AUTH on this connection: is STARTTLS needed? "
                                 "(smtp.security)") from None
        except smtplib.SMTPException as exc:
            if isinstance(exc, smtplib.SMTPResponseException):
                raise SessionFailure(f"{where} refused the login as {cfg.username}: "
                                     f"{_answer(exc.smtp_code, exc.smtp_error)}", code=exc.smtp_code) from None
            raise SessionFailure(f"login as {cfg.username} on {where} failed: {exc}") from None
        except OSError as exc:
            raise SessionFailure(f"connection to {where} lost during login: {exc}") from None


class SmtpSession:
    """One lazily opened connection, reused for every send and QUIT on close()."""

    def __init__(self, transport: SmtpTransport) -> None:
        self._transport = transport
        self._conn: smtplib.SMTP | None = None
        self._used = False      # the connection carried a command already: it may have gone stale

    def send(self, raw: bytes, sender: str, recipients: Sequence[str], key: str) -> None:
        """All recipients or none: a refused one aborts the transaction before DATA."""
        if not recipients:
            raise PermanentFailure(f"email {key[:12]} has no recipients")
        try:
            self._transaction(raw, sender, recipients)
        except _Stale:
            self._drop()                        # the server closed the idle connection: once more
            try:
                self._transaction(raw, sender, recipients)
            except _Stale as exc:
                self._drop()
                raise SessionFailure(f"connection to {self._transport.where} lost: {exc.__cause__}") from None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _quit(conn)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _close(conn)

    def _transaction(self, raw: bytes, sender: str, recipients: Sequence[str]) -> None:
        if self._conn is None:
            self._conn = self._transport.open()
            self._used = False
        conn, reused = self._conn, self._used
        self._used = True
        options = []
        if conn.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if not all(a.isascii() for a in (sender, *recipients)):
            if not conn.has_extn("smtputf8"):
                self._rset()
                raise PermanentFailure(f"{self._transport.where} does not support SMTPUTF8, needed for a "
                                       "non-ASCII address")
            options.append("SMTPUTF8")
        if conn.has_extn("size"):
            options.append(f"SIZE={len(raw)}")
        try:
            code, text = conn.mail(sender, options)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            if reused:
                raise _Stale() from exc
            self._network(exc, "MAIL FROM")
        if code != 250:
            self._refused(code, text, f"MAIL FROM:<{sender}>")
        for rcpt in recipients:
            code, text = self._command(lambda: conn.rcpt(rcpt), f"RCPT TO:<{rcpt}>")
            if code not in (250, 251):
                self._refused(code, text, f"RCPT TO:<{rcpt}>", recipient=rcpt)
        code, text = self._command(lambda: conn.data(raw), "DATA")
        if code != 250:
            self._refused(code, text, "DATA")

    def _command(self, command: Callable[[], tuple[int, bytes]], what: str) -> tuple[int, bytes]:
        try:
            return command()
        except smtplib.SMTPDataError as exc:     # no 354 after DATA
            self._refused(exc.smtp_code, exc.smtp_error, what)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._network(exc, what)

    def _refused(self, code: int, text: bytes | str, what: str, recipient: str | None = None) -> NoReturn:
        """Reset the transaction so the connection stays usable, and raise by the code's class."""
        message = f"{self._transport.where} answered {_answer(code, text)} to {what}"
        if code == 421 or code < 0:
            self._drop()                        # the server is closing the connection: not this email's fault
            raise SessionFailure(message, code=code, recipient=recipient)
        self._rset()
        if 500 <= code <= 599:
            raise PermanentFailure(message, code=code, recipient=recipient)
        raise TemporaryFailure(message, code=code, recipient=recipient)

    def _network(self, exc: BaseException, what: str) -> NoReturn:
        self._drop()
        kind = "timed out" if isinstance(exc, TimeoutError) else "lost"
        raise SessionFailure(f"connection to {self._transport.where} {kind} during {what}: {exc}") from None

    def _rset(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()


# smtplib's preference: the mechanism that keeps the password off the wire first.
_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")


def _login_once(conn: smtplib.SMTP, user: str, password: str) -> None:
    """One AUTH with the best mechanism both sides know. smtplib's login() tries each in turn,
    so a wrong password is refused two or three times per connection (and locked out sooner)."""
    conn.ehlo_or_helo_if_needed()
    if not conn.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = conn.esmtp_features["auth"].upper().split()
    mechanism = next((m for m in _MECHANISMS if m in offered), None)
    if mechanism is None:
        raise smtplib.SMTPException(f"none of the offered AUTH mechanisms is known here: {' '.join(offered)}")
    conn.user, conn.password = user, password     # what smtplib's auth_* objects read (documented)
    conn.auth(mechanism, getattr(conn, "auth_" + mechanism.lower().replace("-", "_")))


class _Stale(Exception):
    """A reused connection was found closed before anything was sent: safe to retry."""


def _answer(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"[:500]


def _quit(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (smtplib.SMTPException, OSError):
        _close(conn)


def _close(conn: smtplib.SMTP) -> None:
    try:
        conn.close()
    except OSError:
        pass                                    # closing anyway

