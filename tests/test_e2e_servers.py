"""The whole story through real servers: requests delivered by SMTP into Dovecot, `smartacct run`
in IDLE mode as a subprocess, every party reading and answering its mail over IMAP (issue 5)."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

import pytest

from e2e import Daemon, Install, as_sent, good_fields, reply, request_email, wait_for
from servers import Dovecot, SmtpRelay

SHARED = "smart-accounts@example.com"
PARTNER = "paula@partner.example"
CUSTOMER = "carla@acme.example"
USERS = (SHARED, PARTNER, CUSTOMER, "dev1@acme.example", "dev2@acme.example")


def backends(dovecot: Dovecot, relay: SmtpRelay, *, password_env: str = "SMARTACCT_IMAP_PASSWORD",
             security: str = "none", port: int | None = None, folder: str = "INBOX") -> str:
    return (
        f'[mailbox]\nbackend = "imap"\nhost = "{dovecot.host}"\nport = {port or dovecot.imap_port}\n'
        f'security = "{security}"\nusername = "{SHARED}"\npassword_env = "{password_env}"\n'
        f'folder = "{folder}"\npoll_interval = "30s"\n'
        f'[smtp]\nbackend = "smtp"\nhost = "{relay.host}"\nport = {relay.port}\nsecurity = "none"\n'
        f'from_address = "Smart Accounts <{SHARED}>"\n'
    )


@pytest.fixture
def install(tmp_path: Path, dovecot: Dovecot, smtp_server: SmtpRelay, database_url: str | None) -> Install:
    for user in USERS:
        dovecot.add_user(user)
    inst = Install(tmp_path, database_url=database_url, backends=backends(dovecot, smtp_server))
    inst.env["SMARTACCT_IMAP_PASSWORD"] = "secret"
    return inst


@pytest.fixture
def daemon(install: Install) -> Iterator[Daemon]:
    d = Daemon(install)
    yield d
    d.kill()


def send(relay: SmtpRelay, msg: EmailMessage, to: str = SHARED) -> None:
    """Deliver as the partner's or customer's mail server would: over SMTP."""
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as smtp:
        smtp.send_message(msg, to_addrs=[to])


def mailbox(dovecot: Dovecot, user: str, count: int, timeout: float = 10) -> list[EmailMessage]:
    return [email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
            for raw in dovecot.wait_for(user, count, timeout=timeout)]


def test_the_whole_story_through_dovecot_and_smtp(install: Install, daemon: Daemon, dovecot: Dovecot,
                                                   smtp_server: SmtpRelay) -> None:
    daemon.start()
    wait_for(lambda: "imap.connected" in install.log())
    started = time.monotonic()
    send(smtp_server, request_email(good_fields()))
    [review_raw] = dovecot.wait_for(PARTNER, 1, timeout=10)
    review_latency = time.monotonic() - started
    review = as_sent(review_raw)
    assert "[SA-000001]" in review.subject
    assert review_latency < 5, f"review took {review_latency:.1f}s"

    send(smtp_server, reply(review, "CONFIRM"), to=str(review.msg["Reply-To"]))
    [activation_raw] = dovecot.wait_for(CUSTOMER, 1)
    activation = as_sent(activation_raw)
    assert "ACCEPT" in activation.text

    send(smtp_server, reply(activation, "ACCEPT", style="outlook"), to=str(activation.msg["Reply-To"]))
    for user in ("dev1@acme.example", "dev2@acme.example"):
        dovecot.wait_for(user, 1)
    assert len(dovecot.wait_for(PARTNER, 3)) == 3  # review, request complete, activation confirmation
    assert len(dovecot.wait_for(CUSTOMER, 2)) == 2  # activation, welcome
    assert install.requests()[0]["state"] == "active"
    assert dovecot.messages(SHARED) == []  # nothing left in the inbox...
    assert len(dovecot.messages(SHARED, "Processed")) == 3  # ...each handled message filed


@pytest.mark.private_dovecot   # stops and starts Dovecot
def test_dovecot_restarts_while_the_daemon_runs(install: Install, daemon: Daemon, dovecot: Dovecot,
                                                smtp_server: SmtpRelay) -> None:
    daemon.start()
    wait_for(lambda: "imap.connected" in install.log())
    send(smtp_server, request_email(good_fields()))
    dovecot.wait_for(PARTNER, 1)
    dovecot.stop()
    wait_for(lambda: "imap.reconnecting" in install.log(), timeout=15)
    dovecot.start()
    wait_for(lambda: "imap.reconnected" in install.log(), timeout=30)
    send(smtp_server, request_email(good_fields(domain="beta.example", customer_email="bob@beta.example")))
    assert len(dovecot.wait_for(PARTNER, 2, timeout=15)) == 2
    assert [r["account_domain"] for r in install.requests()] == ["beta.example", "acme.example"]
    assert dovecot.messages(SHARED) == []


@pytest.mark.both_databases
def test_smtp_down_for_a_while_then_back(install: Install, daemon: Daemon, dovecot: Dovecot,
                                         smtp_server: SmtpRelay) -> None:
    smtp_server.stop()
    daemon.start()
    dovecot.deliver(SHARED, request_email(good_fields()).as_bytes())
    wait_for(lambda: "outbox.paused" in install.log(), timeout=10)
    assert dovecot.messages(PARTNER) == []
    smtp_server.start()
    dovecot.wait_for(PARTNER, 1, timeout=30)
    time.sleep(1)  # a second copy, if the outbox were to send one, would arrive by now
    assert len(dovecot.messages(PARTNER)) == 1  # caught up, nothing sent twice
    log = install.log()
    assert "WARNING outbox.paused error=\"connection to" in log and "email.deferred" not in log
    assert "INFO outbox.resumed sent=1" in log


@pytest.mark.both_databases
def test_a_4xx_is_retried_and_a_5xx_for_the_customer_tells_the_partner(
        install: Install, daemon: Daemon, dovecot: Dovecot, smtp_server: SmtpRelay) -> None:
    smtp_server.fail_next(451)
    smtp_server.refuse(CUSTOMER, 550)
    daemon.start()
    dovecot.deliver(SHARED, request_email(good_fields()).as_bytes())  # not through the failing relay
    [review_raw] = dovecot.wait_for(PARTNER, 1, timeout=20)  # after one 451 and a retry
    review = as_sent(review_raw)
    send(smtp_server, reply(review, "CONFIRM"), to=str(review.msg["Reply-To"]))
    partner_mail = mailbox(dovecot, PARTNER, 3, timeout=20)  # review, request complete, delivery failed
    assert any(CUSTOMER in str(m.get_body(preferencelist=("plain",)).get_content()) and "[SA-000001]" in m["Subject"]
               for m in partner_mail[2:])
    log = install.log()
    assert "ERROR email.failed ref=SA-000001 kind=activation to=carla@acme.example" in log
    assert "email.deferred ref=SA-000001 kind=review" in log


@pytest.mark.both_databases
def test_a_restart_resumes_from_the_saved_uid(install: Install, daemon: Daemon, dovecot: Dovecot) -> None:
    for n in range(3):
        dovecot.deliver(SHARED, request_email(good_fields(domain=f"d{n}.example",
                                                          customer_email=f"c@d{n}.example")).as_bytes())
    install.run_once()
    [(uidvalidity, last_uid)] = install.query("SELECT uidvalidity, last_uid FROM mailbox_cursor")
    assert last_uid == 3
    dovecot.deliver(SHARED, request_email(good_fields(domain="d9.example", customer_email="c@d9.example")).as_bytes())
    install.run_once()
    assert install.query("SELECT last_uid FROM mailbox_cursor") == [(4,)]
    assert len(install.requests()) == 4
    assert "message.duplicate" not in install.log()
    assert len(dovecot.wait_for(PARTNER, 4)) == 4


def test_config_check_tries_both_connections(install: Install, dovecot: Dovecot, smtp_server: SmtpRelay) -> None:
    ok = install.cli("config", "check")
    assert "mailbox (imap): ok" in ok.stdout and "smtp (smtp): ok" in ok.stdout

    def failing(text: str) -> str:
        install.write_config()
        proc = install.cli("config", "check", check=False)
        assert proc.returncode == 1
        return proc.stdout.lower()

    install.backends = backends(dovecot, smtp_server, folder="Nope")
    assert "nope" in failing("folder")
    install.backends = backends(dovecot, smtp_server, port=1)
    assert "refused" in failing("port")
    install.backends = backends(dovecot, smtp_server, security="ssl")
    assert "tls" in failing("tls") or "ssl" in failing("tls")
    install.backends = backends(dovecot, smtp_server)
    install.env["SMARTACCT_IMAP_PASSWORD"] = "hunter2-not-it"
    out = failing("password")
    assert "password" in out
    assert "hunter2" not in out  # never print the secret
