"""/metrics and /healthz scraped over HTTP from a running `smartacct run` (issue 7, item 3):
the counters move with the mail, the gauges read the database, and /healthz turns 503 with a
reason when the mailbox goes away and 200 again when it comes back."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon import config as config_mod
from daemon.app import build
from daemon.ops.metrics import health
from e2e import OUR_ADDRESS, Daemon, Install, Sent, good_fields, request_email, wait_for
from servers import Dovecot, free_port
from test_admin import POISON, poison

PARTNER = "paula@partner.example"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> Samples:
    status, text = get(port, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def install(tmp_path: Path, port: int, database_url: str | None) -> Install:
    return Install(tmp_path, database_url=database_url, extra_config=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')


@pytest.fixture
def daemon(install: Install) -> Iterator[Daemon]:
    d = Daemon(install)
    yield d
    d.kill()


def next_emails(install: Install, count: int) -> list[Sent]:
    got: list[Sent] = []

    def enough() -> bool:
        got.extend(install.new_sent())
        return len(got) >= count
    wait_for(enough)
    return got


def healthy(port: int) -> bool:
    return get(port, "/healthz") == (200, "ok\n")


@pytest.mark.both_databases
def test_counters_and_gauges_follow_the_mail(install: Install, daemon: Daemon, port: int) -> None:
    daemon.start()
    assert f"INFO metrics.listening address=127.0.0.1:{port}" in install.log()
    wait_for(lambda: healthy(port))

    install.drop(request_email(good_fields()))
    next_emails(install, 1)
    m = wait_for(lambda: (s := scrape(port)) and value(s, "smartacct_emails_sent_total", kind="review") and s)
    assert value(m, "smartacct_messages_handled_total", outcome="request") == 1
    assert value(m, "smartacct_emails_sent_total", kind="review") == 1
    assert value(m, "smartacct_requests", state="awaiting_confirmation") == 1
    assert value(m, "smartacct_requests", state="active") == 0
    assert value(m, "smartacct_outbox_queued") == 0
    assert value(m, "smartacct_outbox_oldest_queued_age_seconds") == 0
    assert value(m, "smartacct_outbox_failed") == 0
    assert value(m, "smartacct_messages_unprocessed") == 0
    assert value(m, "smartacct_oldest_unprocessed_message_age_seconds") == 0
    assert value(m, "smartacct_messages_quarantined") == 0
    assert (value(m, "smartacct_check_duration_seconds_count") or 0) >= 1   # the catch-up run at start
    assert value(m, "smartacct_database_up") == 1 and value(m, "smartacct_mailbox_up") == 1
    assert 0 <= (value(m, "smartacct_mailbox_last_contact_age_seconds") or -1) < 60
    assert 0 <= (value(m, "smartacct_loop_heartbeat_age_seconds") or -1) < 60
    assert value(m, "smartacct_imap_reconnects_total") is None   # a Maildir never reconnects

    # A message that makes processing fail: two failed attempts, then quarantine.
    poison(install)
    install.drop(request_email(good_fields("beta.example"), sender=POISON))
    wait_for(lambda: "message.quarantined" in install.log())
    m = scrape(port)
    assert value(m, "smartacct_messages_handled_total", outcome="failed") == 2
    assert value(m, "smartacct_messages_handled_total", outcome="quarantined") == 1
    assert value(m, "smartacct_messages_quarantined") == 1
    assert (value(m, "smartacct_oldest_quarantined_message_age_seconds") or -1) >= 0
    assert healthy(port)   # a quarantined message is for the admin, not a reason to restart the daemon

    assert get(port, "/nothing")[0] == 404
    assert daemon.stop() == 0


@pytest.mark.private_dovecot   # stops and starts Dovecot
def test_healthz_turns_503_while_the_imap_server_is_down(tmp_path: Path, dovecot: Dovecot, port: int,
                                                         database_url: str | None) -> None:
    dovecot.add_user(OUR_ADDRESS)
    install = Install(tmp_path, database_url=database_url,
                      extra_config=f'[metrics]\nlisten = "127.0.0.1:{port}"\n', backends=(
        f'[mailbox]\nbackend = "imap"\nhost = "{dovecot.host}"\nport = {dovecot.imap_port}\nsecurity = "none"\n'
        f'username = "{OUR_ADDRESS}"\npassword_env = "IMAP_PASSWORD"\n'
        '[smtp]\nbackend = "maildir"\npath = "var/outbox"\n'))
    install.env["IMAP_PASSWORD"] = "secret"
    daemon = Daemon(install)
    try:
        daemon.start()
        wait_for(lambda: healthy(port))
        assert value(scrape(port), "smartacct_imap_reconnects_total") == 0

        dovecot.stop()
        status, reason = wait_for(lambda: (r := get(port, "/healthz"))[0] == 503 and r, timeout=15)
        assert reason.startswith("mailbox unreachable: ") and reason.count("\n") == 1
        m = scrape(port)
        assert value(m, "smartacct_mailbox_up") == 0 and value(m, "smartacct_database_up") == 1
        silent_since = value(m, "smartacct_mailbox_last_contact_age_seconds")
        time.sleep(1.1)
        assert (value(scrape(port), "smartacct_mailbox_last_contact_age_seconds") or 0) > (silent_since or 0) + 1

        dovecot.start()
        wait_for(lambda: healthy(port), timeout=40)
        m = scrape(port)
        assert value(m, "smartacct_imap_reconnects_total") == 1 and value(m, "smartacct_mailbox_up") == 1
    finally:
        daemon.kill()


def test_a_failing_oauth2_token_command_shows_when_it_failed(tmp_path: Path, dovecot: Dovecot, port: int) -> None:
    install = Install(tmp_path, extra_config=f'[metrics]\nlisten = "127.0.0.1:{port}"\n', backends=(
        f'[mailbox]\nbackend = "imap"\nhost = "{dovecot.host}"\nport = {dovecot.imap_port}\nsecurity = "none"\n'
        f'username = "{OUR_ADDRESS}"\noauth2_token_command = "false"\n'
        '[smtp]\nbackend = "maildir"\npath = "var/outbox"\n'))
    daemon = Daemon(install)
    try:
        before = time.time()
        daemon.start()
        wait_for(lambda: "imap.reconnecting" in install.log())
        failed_at = value(scrape(port), "smartacct_oauth2_token_last_failure_timestamp_seconds", backend="mailbox")
        assert failed_at is not None and before - 1 <= failed_at <= time.time() + 1
        status, reason = get(port, "/healthz")
        assert status == 503 and "oauth2_token_command failed" in reason
    finally:
        daemon.kill()


def test_a_bad_listen_address_is_a_config_error(install: Install, port: int) -> None:
    install.write_config('[metrics]\nlisten = "localhost"\n')
    proc = install.cli("run", check=False)
    assert proc.returncode == 2 and "metrics.listen" in proc.stderr


def test_a_port_in_use_is_named(install: Install, daemon: Daemon, port: int) -> None:
    daemon.start()
    proc = install.cli("run", check=False)
    assert proc.returncode == 1 and f"metrics.listen: cannot listen on 127.0.0.1:{port}" in proc.stderr


def test_a_loop_without_heartbeat_is_unhealthy(install: Install, tmp_path: Path) -> None:
    app = build(config_mod.load(install.config))
    try:
        list(app.mailbox.fetch())   # the loop's first pass: the Maildir answers
        assert health(app) is None
        app.metrics.heartbeat -= 121
        assert (health(app) or "").startswith("loop stalled: no heartbeat for 121s (limit 120s)")
        app.stop.set()
        assert health(app) == "stopping"
    finally:
        app.close()
