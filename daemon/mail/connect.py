"""Why a connection to a mail server failed, in words an admin can act on: one translator for
socket and TLS errors, shared by the IMAP mailbox and the SMTP transport.

Each message names the config key to check under the caller's section (`mailbox.port`,
`smtp.port`); the caller raises it as its own error (MailboxError, SessionFailure), and
says its protocol's own errors (a greeting that is not IMAP, a 554 banner) itself.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class Server:
    """A server as configured: `section` is the config table its keys live in."""

    section: str          # "mailbox" or "smtp"
    host: str
    port: int
    connect_timeout: float

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def connect_failure(exc: OSError, server: Server) -> str:
    """Opening the connection (and, with security = "ssl", the TLS handshake) failed."""
    where, key = server.where, server.section
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _untrusted(exc, server)
    if isinstance(exc, ssl.SSLError):
        return (f"TLS handshake with {where} failed ({exc.reason}): "
                f"does this port speak TLS? ({key}.security, {key}.port)")
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to {where} refused: wrong host or port? ({key}.port)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {server.host}: {exc.strerror} ({key}.host)"
    if isinstance(exc, TimeoutError):
        return (f"no answer from {where} within {server.connect_timeout:g}s: "
                f"wrong host or port, a firewall, or TLS expected? ({key}.security)")
    return f"cannot connect to {where}: {exc.strerror or describe(exc)}"


def starttls_failure(exc: BaseException, server: Server) -> str:
    """Upgrading a plain connection with STARTTLS failed after the server agreed to it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _untrusted(exc, server)
    if isinstance(exc, ssl.SSLError):
        return f"STARTTLS with {server.where} failed: {exc.reason}"
    return f"connection to {server.where} lost during STARTTLS: {describe(exc)}"


def _untrusted(exc: ssl.SSLCertVerificationError, server: Server) -> str:
    return f"TLS certificate of {server.where} is not trusted: {exc.verify_message}"


def describe(exc: BaseException) -> str:
    """An exception in one short line: its text (a library's bytes shown as text), else its class name."""
    text = str(exc).strip() or type(exc).__name__
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return text[:300]
