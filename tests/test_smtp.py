"""SmtpTransport against a real SMTP server (aiosmtpd) (issue 5, item 2): one that delivers into Dovecot
where a test reads the customer's mailbox, else one that only keeps what it accepted (`smtp_sink`)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from daemon.config import Secret, SmtpConfig
from daemon.errors import PermanentFailure, TemporaryFailure
from daemon.mail.smtp import SmtpTransport
from servers import Dovecot, SmtpRelay, TlsCert, free_port

SENDER = "smart-accounts@example.com"
CUSTOMER = "customer@customer.example"


def email(n: int = 1, to: str = CUSTOMER) -> bytes:
    return (f"From: Smart Accounts <{SENDER}>\r\nTo: {to}\r\nSubject: [SA-{n:06d}] Activate\r\n"
            f"Message-ID: <sa-{n}@example.com>\r\nAuto-Submitted: auto-generated\r\n\r\n"
            "Reply ACCEPT to activate.\r\n.leading dot stays\r\n").encode()


def transport(relay: SmtpRelay, **overrides: Any) -> SmtpTransport:
    ssl_context = overrides.pop("ssl_context", None)
    values: dict[str, Any] = dict(backend="smtp", host=relay.host, port=relay.port, security="none")
    values.update(overrides)
    return SmtpTransport(SmtpConfig(**values), connect_timeout=5, ssl_context=ssl_context)


@pytest.fixture
def customer(dovecot: Dovecot) -> str:
    dovecot.add_user(CUSTOMER)
    return CUSTOMER


def test_sent_email_lands_in_the_customers_mailbox(smtp_server: SmtpRelay, dovecot: Dovecot, customer: str) -> None:
    with transport(smtp_server).session() as session:
        session.send(email(1), SENDER, [customer], "<sa-1@example.com>")
    (got,) = dovecot.wait_for(customer, 1)
    assert b"Subject: [SA-000001] Activate" in got and b"\r\n.leading dot stays\r\n" in got
    assert smtp_server.received[0][:2] == (SENDER, [customer])


def test_one_connection_for_fifty_emails(smtp_sink: SmtpRelay) -> None:
    with transport(smtp_sink).session() as session:
        for n in range(50):
            session.send(email(n), SENDER, [CUSTOMER], f"<sa-{n}@example.com>")
    assert len(smtp_sink.received) == 50
    assert smtp_sink.connections == 1


def test_no_connection_without_a_send(smtp_sink: SmtpRelay) -> None:
    with transport(smtp_sink).session():
        pass
    assert smtp_sink.connections == 0


def test_4xx_is_temporary_and_the_connection_stays_usable(smtp_sink: SmtpRelay) -> None:
    smtp_sink.fail_next(451, "4.3.0 queue full, try later")
    with transport(smtp_sink).session() as session:
        with pytest.raises(TemporaryFailure, match="451 4.3.0 queue full, try later") as err:
            session.send(email(1), SENDER, [CUSTOMER], "<sa-1@example.com>")
        assert err.value.code == 451
        session.send(email(2), SENDER, [CUSTOMER], "<sa-2@example.com>")
    assert len(smtp_sink.received) == 1 and smtp_sink.connections == 1


def test_refused_recipient_is_permanent_and_named(smtp_sink: SmtpRelay) -> None:
    smtp_sink.refuse("gone@customer.example", 550, "5.1.1 user unknown")
    with transport(smtp_sink).session() as session:
        with pytest.raises(PermanentFailure, match="550 5.1.1 user unknown") as err:
            session.send(email(1), SENDER, [CUSTOMER, "gone@customer.example"], "<sa-1@example.com>")
    assert err.value.code == 550 and err.value.recipient == "gone@customer.example"
    assert smtp_sink.received == []            # all recipients or none: no partial send to retry


def test_recipient_4xx_is_temporary(smtp_sink: SmtpRelay) -> None:
    smtp_sink.refuse(CUSTOMER, 450, "4.2.1 mailbox busy")
    with transport(smtp_sink).session() as session, pytest.raises(TemporaryFailure) as err:
        session.send(email(1), SENDER, [CUSTOMER], "<sa-1@example.com>")
    assert err.value.code == 450 and err.value.recipient == CUSTOMER


def test_5xx_after_data_is_permanent(smtp_sink: SmtpRelay) -> None:
    smtp_sink.fail_next(554, "5.7.1 spam detected")
    with transport(smtp_sink).session() as session, pytest.raises(PermanentFailure, match="554 5.7.1 spam") as err:
        session.send(email(1), SENDER, [CUSTOMER], "<sa-1@example.com>")
    assert err.value.code == 554 and err.value.recipient is None


def test_server_down_is_temporary_and_the_next_session_catches_up(
        smtp_server: SmtpRelay, dovecot: Dovecot, customer: str) -> None:
    smtp_server.stop()
    with transport(smtp_server).session() as session, pytest.raises(TemporaryFailure, match="refused"):
        session.send(email(1), SENDER, [customer], "<sa-1@example.com>")
    smtp_server.start()
    with transport(smtp_server).session() as session:
        session.send(email(1), SENDER, [customer], "<sa-1@example.com>")
    assert len(dovecot.wait_for(customer, 1)) == 1


def test_a_dropped_connection_is_reopened_once(smtp_sink: SmtpRelay) -> None:
    with transport(smtp_sink).session() as session:
        session.send(email(1), SENDER, [CUSTOMER], "<sa-1@example.com>")
        smtp_sink.stop()                        # the server goes away between two sends ...
        smtp_sink.start()                       # ... and comes back on the same port
        session.send(email(2), SENDER, [CUSTOMER], "<sa-2@example.com>")
        smtp_sink.stop()
        with pytest.raises(TemporaryFailure, match="connection to .* (lost|refused)"):
            session.send(email(3), SENDER, [CUSTOMER], "<sa-3@example.com>")
    assert len(smtp_sink.received) == 2 and smtp_sink.connections == 2


@pytest.fixture
def auth_relay(tls_cert: TlsCert) -> Iterator[SmtpRelay]:
    relay = SmtpRelay(None, auth_required=True, cert=tls_cert)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


def test_auth_with_password_over_starttls(auth_relay: SmtpRelay, tls_cert: TlsCert) -> None:
    t = transport(auth_relay, security="starttls", host="localhost", username=auth_relay.username,
                  password=Secret(auth_relay.password), ssl_context=tls_cert.client_context())
    t.check()
    with t.session() as session:
        session.send(email(1), SENDER, [CUSTOMER], "<sa-1@example.com>")
    assert len(auth_relay.received) == 1
    assert auth_relay.handler.auth_logins[0][1] == auth_relay.username


def test_wrong_password_is_explained_without_the_password(auth_relay: SmtpRelay) -> None:
    t = transport(auth_relay, username=auth_relay.username, password=Secret("hunter2"))
    with pytest.raises(TemporaryFailure, match="refused the login as relay-user: wrong username or password") as err:
        t.check()
    assert "hunter2" not in str(err.value) and err.value.code == 535


def test_unauthenticated_send_is_refused(auth_relay: SmtpRelay) -> None:
    with transport(auth_relay).session() as session, pytest.raises(PermanentFailure, match="530"):
        session.send(email(1), SENDER, [CUSTOMER], "<sa-1@example.com>")


def test_untrusted_certificate_is_explained(auth_relay: SmtpRelay) -> None:
    with pytest.raises(TemporaryFailure, match="TLS certificate of .* is not trusted"):
        transport(auth_relay, security="starttls").check()


def test_xoauth2_sends_the_token_from_the_command(auth_relay: SmtpRelay, tmp_path: Path) -> None:
    script = tmp_path / "token.py"
    script.write_text(f"print({auth_relay.oauth2_token!r})\n")
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    t = transport(auth_relay, username=auth_relay.username, oauth2_token_command=command)
    with t.session() as session:
        session.send(email(1), SENDER, [CUSTOMER], "<sa-1@example.com>")
    assert auth_relay.handler.auth_logins == [("XOAUTH2", auth_relay.username)]
    script.write_text("print('expired-token')\n")
    with pytest.raises(TemporaryFailure, match="wrong username or XOAUTH2 access token") as err:
        t.check()
    assert "expired-token" not in str(err.value)


def test_failing_token_command_is_explained(auth_relay: SmtpRelay) -> None:
    command = f"{shlex.quote(sys.executable)} -c \"import sys; sys.exit('login expired')\""
    t = transport(auth_relay, username=auth_relay.username, oauth2_token_command=command)
    with pytest.raises(TemporaryFailure, match="oauth2_token_command failed with exit status 1: login expired"):
        t.check()


def test_check_explains_a_wrong_port() -> None:
    t = SmtpTransport(SmtpConfig(backend="smtp", host="127.0.0.1", port=free_port(), security="none"))
    with pytest.raises(TemporaryFailure, match="refused: wrong host or port"):
        t.check()
