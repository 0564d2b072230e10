"""Connection failures in words, one translator for IMAP and SMTP (daemon.mail.connect), fed
exception values: no socket needed. The servers' own tests (test_imap, test_smtp) meet them for real."""

from __future__ import annotations

import errno
import random
import socket
import ssl

import pytest

from daemon.mail.backoff import backoff_delay
from daemon.mail.connect import Server, connect_failure, describe, starttls_failure

IMAP = Server("mailbox", "imap.example.com", 993, 30.0)
SMTP = Server("smtp", "smtp.example.com", 587, 7.5)


def untrusted() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    exc.verify_message = "self-signed certificate"
    return exc


def tls_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    exc.reason = reason
    return exc


@pytest.mark.parametrize("server", [IMAP, SMTP], ids=["imap", "smtp"])
def test_each_failure_names_what_to_check_in_the_callers_section(server: Server) -> None:
    key = server.section
    said = {
        "untrusted": connect_failure(untrusted(), server),
        "handshake": connect_failure(tls_error("WRONG_VERSION_NUMBER"), server),
        "refused": connect_failure(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), server),
        "unknown host": connect_failure(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), server),
        "timeout": connect_failure(TimeoutError("timed out"), server),
        "other": connect_failure(OSError(errno.EHOSTUNREACH, "No route to host"), server),
    }
    where = f"{server.host}:{server.port}"
    assert said["untrusted"] == f"TLS certificate of {where} is not trusted: self-signed certificate"
    assert said["handshake"] == (f"TLS handshake with {where} failed (WRONG_VERSION_NUMBER): "
                                 f"does this port speak TLS? ({key}.security, {key}.port)")
    assert said["refused"] == f"connection to {where} refused: wrong host or port? ({key}.port)"
    assert said["unknown host"] == f"cannot resolve {server.host}: Name or service not known ({key}.host)"
    assert said["timeout"] == (f"no answer from {where} within {server.connect_timeout:g}s: "
                               f"wrong host or port, a firewall, or TLS expected? ({key}.security)")
    assert said["other"] == f"cannot connect to {where}: No route to host"
    other = "smtp" if key == "mailbox" else "mailbox"
    assert not any(f"{other}." in text for text in said.values())


def test_starttls_failures() -> None:
    assert starttls_failure(untrusted(), SMTP) == (
        "TLS certificate of smtp.example.com:587 is not trusted: self-signed certificate")
    assert starttls_failure(tls_error("UNEXPECTED_EOF_WHILE_READING"), IMAP) == (
        "STARTTLS with imap.example.com:993 failed: UNEXPECTED_EOF_WHILE_READING")
    assert starttls_failure(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), IMAP) == (
        "connection to imap.example.com:993 lost during STARTTLS: [Errno 104] Connection reset by peer")


def test_describe_is_one_short_line() -> None:
    assert describe(EOFError()) == "EOFError"
    assert describe(Exception(b"[AUTHENTICATIONFAILED] Authentication failed.")) == (
        "[AUTHENTICATIONFAILED] Authentication failed.")
    assert len(describe(Exception("x" * 1000))) == 300


def test_one_backoff_formula_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempt, full in [(1, 5.0), (2, 10.0), (3, 20.0), (7, 300.0), (40, 300.0)]:
        delay = backoff_delay(attempt, rng, start=5.0, cap=300.0)
        assert full / 2 <= delay <= full
