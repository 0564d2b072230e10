"""ImapMailbox against a real Dovecot (issue 5, item 1)."""

from __future__ import annotations

import logging
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from daemon.config import Duration, MailboxConfig, Secret, Size
from daemon.errors import MailboxAuthError, MailboxError
from daemon.mail.imap import ImapMailbox, backoff_delay
from daemon.mail.mailbox import InboxMessage
from models.message import Folder
from daemon.mail.oauth2 import TokenCommandError, token_from_command, xoauth2_string
from servers import Dovecot, free_port

USER = "smart-accounts@example.com"


@dataclass
class MemoryCursor:
    """The lead's database cursor, in memory; counts saves."""

    position: tuple[int, int] | None = None
    saves: list[tuple[int, int]] = field(default_factory=list)

    def load(self) -> tuple[int, int] | None:
        return self.position

    def save(self, uidvalidity: int, last_uid: int) -> None:
        self.position = (uidvalidity, last_uid)
        self.saves.append(self.position)


def message(n: int, body: str = "Account Name: Example\r\n") -> bytes:
    return (f"From: partner@partner.example\r\nTo: {USER}\r\nSubject: request {n}\r\n"
            f"Message-ID: <m{n}@partner.example>\r\n\r\n{body}").encode()


def config(dovecot: Dovecot, **overrides: Any) -> MailboxConfig:
    values: dict[str, Any] = dict(
        backend="imap", host=dovecot.host, port=dovecot.imap_port, security="none", username=USER,
        password=Secret("secret"), poll_interval=Duration(seconds=1),
    )
    values.update(overrides)
    return MailboxConfig(**values)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [getattr(r, "fields", {}) for r in caplog.records if r.name == "smartacct" and r.getMessage() == name]


@pytest.fixture(autouse=True)
def info_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smartacct")


@pytest.fixture
def mailbox_user(dovecot: Dovecot) -> str:
    dovecot.add_user(USER)
    return USER


@pytest.fixture
def make_mailbox(dovecot: Dovecot, mailbox_user: str):  # type: ignore[no-untyped-def]
    made: list[ImapMailbox] = []

    def make(cursor: MemoryCursor | None = None, **kwargs: Any) -> ImapMailbox:
        cfg_overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in MailboxConfig.__dataclass_fields__}
        box = ImapMailbox(config(dovecot, **cfg_overrides), cursor or MemoryCursor(), connect_timeout=5, **kwargs)
        made.append(box)
        return box

    yield make
    for box in made:
        box.close()


def test_plain_login_creates_the_filing_folders(dovecot: Dovecot, make_mailbox: Any) -> None:
    box = make_mailbox()
    assert list(box.fetch()) == []
    assert {"INBOX", "Processed", "Rejected", "Quarantine"} <= set(dovecot.folders(USER))
    assert box.last_contact is not None and box.reconnects == 0


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_tls_with_the_test_ca(dovecot: Dovecot, make_mailbox: Any, security: str) -> None:
    port = dovecot.imaps_port if security == "ssl" else dovecot.imap_port
    dovecot.deliver(USER, message(1))
    box = make_mailbox(security=security, port=port, host="localhost",
                       ssl_context=dovecot.cert.client_context())
    (got,) = list(box.fetch())
    assert b"Subject: request 1" in got.raw and not got.truncated


def test_untrusted_certificate_is_a_plain_error(dovecot: Dovecot, make_mailbox: Any) -> None:
    box = make_mailbox(security="ssl", port=dovecot.imaps_port)
    with pytest.raises(MailboxError, match="TLS certificate of .* is not trusted"):
        box.check()


def test_check_explains_failures(dovecot: Dovecot, make_mailbox: Any) -> None:
    result = make_mailbox().check()
    assert result.idle and result.move
    with pytest.raises(MailboxError, match="refused: wrong host or port"):
        make_mailbox(port=free_port()).check()
    with pytest.raises(MailboxError, match="TLS handshake .* failed"):
        make_mailbox(security="ssl", port=dovecot.imap_port).check()
    with pytest.raises(MailboxError, match="folder 'Requests' does not exist"):
        make_mailbox(folder="Requests").check()
    # Last: after a failed login a mail server may delay this client's next logins (auth penalty;
    # the tests' Dovecot has none, so that one test's wrong password slows no other).
    with pytest.raises(MailboxAuthError, match="wrong username or the password") as err:
        make_mailbox(password=Secret("hunter2")).check()
    assert "hunter2" not in str(err.value)


def test_wrong_password_is_an_auth_error_and_logged_once(
        dovecot: Dovecot, make_mailbox: Any, caplog: pytest.LogCaptureFixture) -> None:
    box = make_mailbox(password=Secret("hunter2"))
    with pytest.raises(MailboxAuthError, match="refused the login as smart-accounts@example.com"):
        list(box.fetch())
    (line,) = events(caplog, "imap.reconnecting")
    assert line["attempt"] == 1 and line["delay"] == "60.0s"      # no point retrying fast
    assert "hunter2" not in caplog.text
    with pytest.raises(MailboxError, match="next attempt in"):
        list(box.fetch())                                         # no new login before the delay


def test_250_messages_in_few_round_trips(
        dovecot: Dovecot, make_mailbox: Any, caplog: pytest.LogCaptureFixture) -> None:
    dovecot.deliver_many(USER, [message(n) for n in range(250)])
    cursor = MemoryCursor()
    box = make_mailbox(cursor, batch_size=100)
    caplog.set_level(logging.DEBUG, logger="imapclient.imaplib")
    got = list(box.fetch())
    assert [m.raw.split(b"Subject: ")[1].split(b"\r\n")[0] for m in got] == [
        f"request {n}".encode() for n in range(250)]
    keys = [int(m.key.split(":")[1]) for m in got]
    assert keys == sorted(keys)
    sent = [r.getMessage() for r in caplog.records if r.name == "imapclient.imaplib" and "> b'" in r.getMessage()]
    fetches = [line for line in sent if " UID FETCH " in line]
    assert len(fetches) == 1 + 3            # sizes for all 250, then bodies in batches of 100
    assert len(cursor.saves) <= 1 + 3       # on connect, then at most once per batch


def test_file_by_move_and_by_copy_expunge(dovecot: Dovecot, make_mailbox: Any,
                                          caplog: pytest.LogCaptureFixture) -> None:
    dovecot.deliver_many(USER, [message(1), message(2)])
    caplog.set_level(logging.DEBUG, logger="imapclient.imaplib")
    moving = make_mailbox()
    first = next(iter(moving.fetch()))
    moving.file(first.key, Folder.processed)
    moving.close()
    copying = make_mailbox(use_move=False)
    (second,) = list(copying.fetch())
    copying.file(second.key, Folder.rejected)
    assert dovecot.messages(USER) == []
    assert [b"request 1" in m for m in dovecot.messages(USER, "Processed")] == [True]
    assert [b"request 2" in m for m in dovecot.messages(USER, "Rejected")] == [True]
    sent = " ".join(r.getMessage() for r in caplog.records if r.name == "imapclient.imaplib")
    assert " UID MOVE " in sent and " UID COPY " in sent and " UID EXPUNGE " in sent


def test_oversized_message_is_fetched_as_header_only(dovecot: Dovecot, make_mailbox: Any) -> None:
    dovecot.deliver(USER, message(1, body="x" * 70 + "\r\n") * 1)
    dovecot.deliver(USER, message(2, body=("y" * 70 + "\r\n") * 100))
    small, big = list(make_mailbox(max_message_size=Size(2000)).fetch())
    assert not small.truncated and small.raw.endswith(b"x" * 70 + b"\r\n")
    assert big.truncated and b"Subject: request 2" in big.raw and b"yyyy" not in big.raw
    assert big.size > 7000 and len(big.raw) < 500


def test_cursor_resumes_without_refetching(dovecot: Dovecot, make_mailbox: Any) -> None:
    dovecot.deliver_many(USER, [message(n) for n in range(1, 4)])
    cursor = MemoryCursor()
    first = make_mailbox(cursor)
    got = list(first.fetch())
    validity = int(got[0].key.split(":")[0])
    first.file(got[0].key, Folder.processed)
    first.file(got[2].key, Folder.processed)     # the second is left unfiled (its commit failed)
    assert [m.key for m in first.fetch()] == [got[1].key]   # the same instance offers it again
    first.close()
    assert cursor.position == (validity, 1)
    again = make_mailbox(cursor)
    (retry,) = list(again.fetch())
    assert retry.key == got[1].key
    again.file(retry.key, Folder.quarantine)
    again.close()
    assert cursor.position == (validity, 2)      # 3 was filed, but by the other instance
    # Messages still in the folder below the cursor are not fetched again.
    dovecot.deliver_many(USER, [message(4), message(5)])
    assert [m.key for m in make_mailbox(MemoryCursor((validity, 4))).fetch()] == [f"{validity}:5"]


def test_uidvalidity_change_triggers_a_full_resync(
        dovecot: Dovecot, make_mailbox: Any, caplog: pytest.LogCaptureFixture) -> None:
    dovecot.deliver_many(USER, [message(1), message(2)])
    cursor = MemoryCursor((12345, 2))          # saved for a folder that was since recreated
    got = list(make_mailbox(cursor).fetch())
    assert len(got) == 2
    validity = int(got[0].key.split(":")[0])
    assert validity != 12345 and cursor.position == (validity, 0)
    (line,) = events(caplog, "imap.uidvalidity_changed")
    assert line["old"] == 12345 and line["new"] == validity


def test_filing_with_a_stale_key_leaves_the_message(dovecot: Dovecot, make_mailbox: Any,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    dovecot.deliver(USER, message(1))
    box = make_mailbox()
    (got,) = list(box.fetch())
    box.file("1:" + got.key.split(":")[1], Folder.processed)  # a key from before a UIDVALIDITY change
    assert len(dovecot.messages(USER)) == 1  # fetched again under its new key, then filed
    (line,) = events(caplog, "imap.file_skipped")
    assert line["reason"] == "uidvalidity_changed"


def test_a_batch_is_filed_with_one_move_and_messages_another_session_moved_are_skipped(
        dovecot: Dovecot, make_mailbox: Any) -> None:
    for n in range(5):
        dovecot.deliver(USER, message(n))
    box = make_mailbox()
    got = list(box.fetch())
    with dovecot.imap_client(USER) as other:  # another instance files the first message meanwhile
        other.select_folder("INBOX")
        other.move([int(got[0].key.split(":")[1])], "Processed")
    box.file_many([(m.key, Folder.processed) for m in got[:4]] + [(got[4].key, Folder.rejected)])
    assert dovecot.messages(USER) == []
    assert len(dovecot.messages(USER, "Processed")) == 4
    assert len(dovecot.messages(USER, "Rejected")) == 1


def test_idle_wakes_within_a_second_of_delivery(dovecot: Dovecot, make_mailbox: Any) -> None:
    box = make_mailbox()
    assert list(box.fetch()) == []
    delivered: list[float] = []

    def deliver() -> None:
        time.sleep(0.5)
        dovecot.deliver(USER, message(1))
        delivered.append(time.monotonic())

    thread = threading.Thread(target=deliver)
    thread.start()
    box.wait(20, threading.Event())
    woke = time.monotonic()
    thread.join()
    assert woke - delivered[0] < 1.0
    assert len(list(box.fetch())) == 1


def test_mail_that_lands_just_before_idle_wakes_the_wait_at_once(dovecot: Dovecot, make_mailbox: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Mail delivered between our last command and IDLE: Dovecot does not announce it in IDLE,
    only in the answer to DONE. The wait hears it after its first, short round, not at the
    next poll (here 60 s away)."""
    box = make_mailbox()
    assert list(box.fetch()) == []
    client = box._conn.client
    real_idle = client.idle
    delivered: list[float] = []

    def idle_after_a_delivery() -> None:
        if not delivered:
            dovecot.deliver(USER, message(1))
            delivered.append(time.monotonic())
        real_idle()

    monkeypatch.setattr(client, "idle", idle_after_a_delivery)
    box.wait(60, threading.Event())
    assert delivered and time.monotonic() - delivered[0] < 10   # woken by the mail, not the deadline
    assert len(list(box.fetch())) == 1


def test_wait_notices_stop_within_a_second(make_mailbox: Any) -> None:
    box = make_mailbox()
    list(box.fetch())
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    box.wait(30, stop)
    assert time.monotonic() - started < 1.5


def test_polling_when_idle_is_off(dovecot: Dovecot, make_mailbox: Any) -> None:
    box = make_mailbox(idle=False, poll_interval=Duration(seconds=1))
    list(box.fetch())
    dovecot.deliver(USER, message(1))
    started = time.monotonic()
    box.wait(30, threading.Event())
    assert 0.5 < time.monotonic() - started < 1.5
    assert len(list(box.fetch())) == 1


def test_idle_renewal_keeps_the_connection(dovecot: Dovecot, make_mailbox: Any,
                                           caplog: pytest.LogCaptureFixture) -> None:
    box = make_mailbox(idle_renew=0.5)
    list(box.fetch())
    caplog.set_level(logging.DEBUG, logger="imapclient.imaplib")
    box.wait(1.8, threading.Event())
    sent = [r.getMessage() for r in caplog.records if r.name == "imapclient.imaplib"]
    assert sum(" IDLE" in line and "> b'" in line for line in sent) >= 3
    assert sum(" NOOP" in line and "> b'" in line for line in sent) >= 3
    assert box.reconnects == 0


@pytest.mark.private_dovecot   # stops and starts Dovecot
def test_dovecot_restart_while_waiting_loses_nothing(
        dovecot: Dovecot, make_mailbox: Any, caplog: pytest.LogCaptureFixture) -> None:
    box = make_mailbox(backoff_cap=2)
    list(box.fetch())

    def restart() -> None:
        time.sleep(0.3)
        dovecot.stop()
        dovecot.start()
        dovecot.deliver(USER, message(1))

    thread = threading.Thread(target=restart)
    thread.start()
    stop = threading.Event()
    got: list[InboxMessage] = []
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        box.wait(5, stop)
        try:
            got = list(box.fetch())
        except MailboxError:
            continue                       # what the daemon's loop does: wait and try again
    thread.join()
    assert [b"request 1" in m.raw for m in got] == [True]
    assert box.reconnects >= 1
    lines = events(caplog, "imap.reconnecting")
    assert lines and lines[0]["attempt"] == 1 and lines[0]["delay"].endswith("s") and lines[0]["error"]
    assert events(caplog, "imap.reconnected")


def test_xoauth2_uses_the_token_command(dovecot: Dovecot, make_mailbox: Any, tmp_path: Path) -> None:
    # This Dovecot checks an XOAUTH2 token like a password, so the user's password serves as token.
    dovecot.add_user("oauth@example.com", password="ya29.token-from-command")
    script = tmp_path / "token.py"
    script.write_text("print('ya29.token-from-command')\n")
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    box = make_mailbox(username="oauth@example.com", password=None, oauth2_token_command=command)
    assert box.check().idle
    dovecot.wait_for_log("method=XOAUTH2")
    script.write_text("print('expired')\n")
    with pytest.raises(MailboxAuthError, match="XOAUTH2 access token") as err:
        make_mailbox(username="oauth@example.com", password=None, oauth2_token_command=command).check()
    assert "expired" not in str(err.value)


def test_failing_token_command_is_a_plain_auth_error(make_mailbox: Any) -> None:
    command = f"{shlex.quote(sys.executable)} -c \"import sys; sys.exit('no refresh token')\""
    with pytest.raises(MailboxAuthError, match="exit status 1: no refresh token"):
        make_mailbox(password=None, oauth2_token_command=command).check()
    with pytest.raises(MailboxAuthError, match="program not found"):
        make_mailbox(password=None, oauth2_token_command="/nonexistent/get-token").check()


def test_token_command_and_sasl_string() -> None:
    assert token_from_command(f"{shlex.quote(sys.executable)} -c \"print('tok  ')\"") == "tok"
    with pytest.raises(TokenCommandError, match="printed no access token"):
        token_from_command(f"{shlex.quote(sys.executable)} -c pass")
    with pytest.raises(TokenCommandError, match="did not finish within"):
        token_from_command(f"{shlex.quote(sys.executable)} -c \"import time; time.sleep(5)\"", timeout=0.2)
    assert xoauth2_string("u@example.com", "T") == "user=u@example.com\x01auth=Bearer T\x01\x01"


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(n, rng) for n in range(1, 10)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert all(30.0 <= d <= 60.0 for d in delays[6:])


@pytest.fixture
def another_instance_creates_first(dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Another instance's CREATE lands between our existence check and our CREATE (the race of
    instances starting together), made deterministic: when we find a filing folder missing, a
    second real session creates it before we get to."""
    raced: list[str] = []
    original = IMAPClient.folder_exists

    def folder_exists(client: IMAPClient, folder: str) -> bool:
        exists = original(client, folder)
        if not exists and folder != "INBOX":
            with dovecot.imap_client(USER) as other:
                other.create_folder(folder)
            raced.append(folder)
        return bool(exists)

    monkeypatch.setattr(IMAPClient, "folder_exists", folder_exists)
    return raced


def test_a_folder_another_instance_created_meanwhile_is_fine(
        dovecot: Dovecot, make_mailbox: Any, another_instance_creates_first: list[str],
        caplog: pytest.LogCaptureFixture) -> None:
    dovecot.deliver(USER, message(1))
    box = make_mailbox()
    (got,) = list(box.fetch())                     # connects: three CREATEs answered ALREADYEXISTS
    assert another_instance_creates_first == ["Processed", "Rejected", "Quarantine"]
    assert events(caplog, "imap.reconnecting") == [] and box.reconnects == 0
    box.file(got.key, Folder.processed)
    assert len(dovecot.messages(USER, "Processed")) == 1


def test_a_deleted_folder_recreated_by_another_instance_meanwhile_is_fine(
        dovecot: Dovecot, make_mailbox: Any, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    dovecot.deliver(USER, message(1))
    box = make_mailbox()
    (got,) = list(box.fetch())
    with dovecot.imap_client(USER) as admin:
        admin.delete_folder("Rejected")            # an admin tidies up while the daemon runs
    original = IMAPClient.folder_exists

    def folder_exists(client: IMAPClient, folder: str) -> bool:
        exists = original(client, folder)
        if not exists:                             # ... and another instance re-creates it first
            with dovecot.imap_client(USER) as other:
                other.create_folder(folder)
        return bool(exists)

    monkeypatch.setattr(IMAPClient, "folder_exists", folder_exists)
    box.file(got.key, Folder.rejected)
    assert len(dovecot.messages(USER, "Rejected")) == 1
    assert events(caplog, "imap.reconnecting") == []

