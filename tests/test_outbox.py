"""The outbox drain against a real SMTP server (aiosmtpd) and real Maildirs: a failed session stops
the drain and backs off; answers about one email stay that email's (issue 11, items 7 and 8)."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from daemon.engine import outbox
from daemon.app import App, build
from daemon.clock import FixedClock
from daemon.config import from_dict, load
from e2e import Install, wait_for
from models.outbox import OutboxRow, OutboxState
from servers import SmtpRelay

# The outbox claim and its state changes: every test here on SQLite and PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_databases

SENDER = "smart-accounts@example.com"


@pytest.fixture
def auth_relay() -> Iterator[SmtpRelay]:
    relay = SmtpRelay(None, auth_required=True)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


def make_app(tmp_path: Path, database_url: str | None, smtp: dict[str, Any], password: str = "",
             clock: FixedClock | None = None) -> App:
    data: dict[str, Any] = {"smtp": smtp, "workflow": {"partner_domains": ["partner.example"]}}
    if database_url:
        data["database"] = {"url": database_url}
    cfg = from_dict(data, base=tmp_path, environ={"SMTP_PASSWORD": password})
    return build(cfg, clock=clock or FixedClock())


def relay_config(relay: SmtpRelay) -> dict[str, Any]:
    return {"backend": "smtp", "host": relay.host, "port": relay.port, "security": "none",
            "username": relay.username, "password_env": "SMTP_PASSWORD"}


def queue(app: App, count: int) -> None:
    now = app.clock.now()
    rows = [dict(kind="review", recipient=f"p{n}@partner.example", message_id_hash=f"m{n}",
                 body=f"Subject: review {n}\r\nMessage-ID: <m{n}@example.com>\r\n\r\nhello\r\n".encode(),
                 state=OutboxState.queued.value, created_at=now, next_try_at=now)
            for n in range(count)]
    OutboxRow.insert_many(rows).execute()


def states() -> dict[str, int]:
    found: dict[str, int] = {}
    for row in OutboxRow.select():
        found[row.state] = found.get(row.state, 0) + 1
    return found


def lines(caplog: pytest.LogCaptureFixture, level: int | None = None) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "smartacct" and (level is None or r.levelno == level)]


@pytest.fixture(autouse=True)
def info_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smartacct")


def test_a_wrong_password_costs_one_login_not_one_per_email(
        tmp_path: Path, database_url: str | None, auth_relay: SmtpRelay, caplog: pytest.LogCaptureFixture) -> None:
    clock = FixedClock()
    app = make_app(tmp_path, database_url, relay_config(auth_relay), password="hunter2", clock=clock)
    queue(app, 20)
    result = app.outbox.drain()
    assert (auth_relay.connections, auth_relay.handler.auth_attempts) == (1, 1)
    assert (result.sent, result.retried, result.failed) == (0, 0, 0)
    assert states() == {"queued": 20}
    assert {row.attempts for row in OutboxRow.select()} == {0}       # no email is to blame
    assert lines(caplog, logging.WARNING) == ["outbox.paused"]
    paused = next(r for r in caplog.records if r.getMessage() == "outbox.paused").fields  # type: ignore[attr-defined]
    assert "refused the login as relay-user" in paused["error"] and paused["queued"] == 20
    assert "hunter2" not in caplog.text

    retry_at = app.transport.backoff.until
    assert retry_at is not None and dt.timedelta(seconds=2.5) <= retry_at - clock.now() <= dt.timedelta(seconds=5)
    assert app.outbox.next_due() == retry_at            # the loop sleeps until then, no tight loop
    app.outbox.drain()
    assert auth_relay.connections == 1                 # backing off: not even a connection
    clock.advance(retry_at - clock.now())
    app.outbox.drain()
    assert (auth_relay.connections, auth_relay.handler.auth_attempts) == (2, 2)
    assert lines(caplog, logging.WARNING) == ["outbox.paused"] * 2
    assert dt.timedelta(seconds=5) <= app.transport.backoff.until - clock.now() <= dt.timedelta(seconds=10)
    app.close()

    # The admin fixes the password and restarts the daemon: every email goes out, over one session.
    fixed = make_app(tmp_path, database_url, relay_config(auth_relay), password=auth_relay.password, clock=clock)
    assert fixed.outbox.drain().sent == 20
    assert len(auth_relay.received) == 20 and auth_relay.connections == 3
    assert states() == {"sent": 20}
    fixed.close()


def test_give_up_after_still_fails_emails_no_session_could_take(
        tmp_path: Path, database_url: str | None, auth_relay: SmtpRelay, caplog: pytest.LogCaptureFixture) -> None:
    clock = FixedClock()
    app = make_app(tmp_path, database_url, relay_config(auth_relay), password="hunter2", clock=clock)
    queue(app, 5)
    clock.advance(dt.timedelta(days=1))
    queue_later = dict(kind="welcome", recipient="c@customer.example", message_id_hash="late",
                       body=b"Subject: late\r\n\r\nhello\r\n", state="queued", created_at=clock.now(),
                       next_try_at=clock.now())
    OutboxRow.insert(queue_later).execute()
    clock.advance(dt.timedelta(days=1, minutes=1))     # the first five are older than give_up_after (2d)
    app.outbox.drain()
    assert auth_relay.connections == 1
    assert states() == {"failed": 5, "queued": 1}
    failed = [r for r in caplog.records if r.getMessage() == "email.failed"]
    assert len(failed) == 5 and "still failing after 2 days" in failed[0].fields["error"]  # type: ignore[attr-defined]
    app.close()


def test_a_421_ends_the_drain_and_the_email_is_not_charged(
        tmp_path: Path, database_url: str | None, caplog: pytest.LogCaptureFixture) -> None:
    relay = SmtpRelay(None)
    relay.start()
    try:
        relay.fail_next(421, "4.3.2 shutting down", count=None)
        clock = FixedClock()
        app = make_app(tmp_path, database_url, {"backend": "smtp", "host": relay.host, "port": relay.port,
                                                "security": "none"}, clock=clock)
        queue(app, 10)
        app.outbox.drain()
        assert relay.connections == 1 and relay.received == []
        assert states() == {"queued": 10} and {row.attempts for row in OutboxRow.select()} == {0}
        assert lines(caplog, logging.WARNING) == ["outbox.paused"]
        relay.clear()
        clock.advance(app.transport.backoff.until - clock.now())
        assert app.outbox.drain().sent == 10
        assert relay.connections == 2
        assert "outbox.resumed" in lines(caplog)
        app.close()
    finally:
        relay.stop()


@pytest.mark.parametrize("outbox_path", ["/proc/smartacct-outbox", "{tmp}/a-file/outbox"])
def test_an_outbox_folder_nobody_can_write_keeps_the_emails_queued(
        tmp_path: Path, database_url: str | None, caplog: pytest.LogCaptureFixture, outbox_path: str) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    path = outbox_path.format(tmp=tmp_path)          # root cannot write there either
    clock = FixedClock()
    app = make_app(tmp_path, database_url, {"backend": "maildir", "path": path}, clock=clock)
    queue(app, 3)
    result = app.outbox.drain()
    assert (result.sent, result.retried, result.failed) == (0, 0, 0)
    assert states() == {"queued": 3}
    [paused] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert paused.getMessage() == "outbox.paused"
    error = paused.fields["error"]  # type: ignore[attr-defined]
    assert f"cannot write to the outbox {path}" in error and "smtp.path must name a folder" in error
    assert "Errno" not in error and "Error" not in error
    last_error = OutboxRow.select().order_by(OutboxRow.id).first().last_error
    assert f"cannot write to the outbox {path}" in last_error
    app.close()


# --- the batch claim under a lease (issue 16, goal 2) ----------------------------------------------


def claims(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The claim statements peewee ran (its logger names every statement at DEBUG)."""
    return [r.getMessage() for r in caplog.records
            if r.name == "peewee" and "RETURNING" in r.getMessage() and "leased_by" in r.getMessage()]


def test_a_batch_is_claimed_in_one_statement_and_every_email_marked_as_it_goes(
        tmp_path: Path, database_url: str | None, caplog: pytest.LogCaptureFixture) -> None:
    relay = SmtpRelay(None)
    relay.start()
    try:
        app = make_app(tmp_path, database_url, {"backend": "smtp", "host": relay.host, "port": relay.port,
                                                "security": "none"})
        queue(app, outbox.CLAIM_BATCH * 2 + 7)
        marked_when_received: list[int] = []
        original = relay.handler.handle_DATA

        async def count_marked(server: Any, session: Any, envelope: Any) -> str:
            # What the database says as the server takes email n: the n - 1 before it are marked sent.
            marked_when_received.append(OutboxRow.select().where(OutboxRow.state == "sent").count())
            return await original(server, session, envelope)

        relay.handler.handle_DATA = count_marked  # type: ignore[method-assign]
        caplog.set_level(logging.DEBUG, logger="peewee")
        result = app.outbox.drain()
        assert result.sent == outbox.CLAIM_BATCH * 2 + 7 and states() == {"sent": outbox.CLAIM_BATCH * 2 + 7}
        assert len(claims(caplog)) == 3                     # 100, 100, 7: one statement each
        assert marked_when_received == list(range(outbox.CLAIM_BATCH * 2 + 7))
        assert lines(caplog).count("email.sent") == outbox.CLAIM_BATCH * 2 + 7
        app.close()
    finally:
        relay.stop()


def test_stop_between_emails_releases_the_rest_of_the_batch_due_now(
        tmp_path: Path, database_url: str | None) -> None:
    relay = SmtpRelay(None)
    relay.start()
    try:
        clock = FixedClock()
        app = make_app(tmp_path, database_url, {"backend": "smtp", "host": relay.host, "port": relay.port,
                                                "security": "none"}, clock=clock)
        queue(app, 10)
        original = relay.handler.handle_DATA

        async def stop_at_four(server: Any, session: Any, envelope: Any) -> str:
            answer = await original(server, session, envelope)
            if len(relay.received) == 4:
                app.stop.set()                               # SIGTERM while the fourth email is sent
            return answer

        relay.handler.handle_DATA = stop_at_four  # type: ignore[method-assign]
        assert app.outbox.drain().sent == 4
        assert states() == {"sent": 4, "queued": 6}
        # The six not sent are due now, for this process's next drain or another's, not after the lease.
        assert app.outbox.next_due() == clock.now()
        app.stop.clear()
        assert app.outbox.drain().sent == 6
        assert len(relay.received) == 10 and states() == {"sent": 10}
        app.close()
    finally:
        relay.stop()


def test_a_process_killed_in_the_middle_of_a_batch_loses_nothing_and_resends_only_the_email_in_flight(
        tmp_path: Path, database_url: str | None, caplog: pytest.LogCaptureFixture) -> None:
    """SIGKILL after the server took email 8 and before its 250 reached the sender: 1-7 are marked
    sent, 8 is in flight, 9-20 leased by a dead process. The next `run --once` sends 8 again
    (the same bytes: one copy twice) and 9-20 once, without waiting for the lease."""
    relay = SmtpRelay(None)
    relay.start()
    try:
        install = Install(tmp_path, database_url=database_url, backends=(
            '[mailbox]\nbackend = "maildir"\npath = "var/inbox"\n'
            f'[smtp]\nbackend = "smtp"\nhost = "{relay.host}"\nport = {relay.port}\nsecurity = "none"\n'))
        app = build(load(install.config, environ={}))
        queue(app, 20)
        app.close()
        killed: list[subprocess.Popen[bytes]] = []
        original = relay.handler.handle_DATA

        async def kill_at_eight(server: Any, session: Any, envelope: Any) -> str:
            answer = await original(server, session, envelope)
            if len(relay.received) == 8:
                killed[0].kill()
                killed[0].wait()
            return answer

        relay.handler.handle_DATA = kill_at_eight  # type: ignore[method-assign]
        (tmp_path / "var" / "inbox").mkdir(parents=True)
        killed.append(subprocess.Popen(install.command("-c", str(install.config), "run", "--once"), cwd=tmp_path,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        assert killed[0].wait(timeout=60) == -signal.SIGKILL
        assert len(relay.received) == 8
        rows = {r[0]: r[1] for r in install.query("SELECT message_id_hash, state FROM outbox")}
        assert sorted(rows.values()).count("sent") == 7 and len(rows) == 20   # nothing lost
        if database_url:   # its session gone, its drain lock with it
            wait_for(lambda: not install.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"))

        assert install.log().count(" email.sent ") == 7

        relay.handler.handle_DATA = original  # type: ignore[method-assign]
        install.run_once()
        copies = Counter(_subject(raw) for _f, _t, raw in relay.received)
        assert len(relay.received) == 21 and len(copies) == 20
        assert copies["review 7"] == 2                                       # the one in flight, twice
        assert all(n == 1 for subject, n in copies.items() if subject != "review 7")
        assert {r[0] for r in install.query("SELECT state FROM outbox")} == {"sent"}
        assert install.log().count(" email.sent ") == 7 + 13
    finally:
        relay.stop()


def _subject(raw: bytes) -> str:
    return raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
