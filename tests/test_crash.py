"""Crash safety (issue 6, item 4; DESIGN §4): `smartacct run` killed with SIGKILL at random
moments while it works through a backlog of requests and replies, restarted each time;
and stopped with SIGTERM in the middle of a backlog.

Kill times are random; the seed is printed (set SMARTACCT_SEED to replay a run's
scenario; SMARTACCT_SOAK=1 draws fresh ones). The assertions hold for every seed. Each SIGKILL test prints one summary line
with the figures: kills, messages handled, emails, duplicates.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from crash_harness import SHARED, Account, Harness, ImapSite, MaildirSite, Site, message_id_of
from seeds import SEED
from e2e import Install, wait_for
from servers import Dovecot, SmtpRelay
from test_e2e_servers import backends

MAILDIR_REQUESTS = 400
IMAP_REQUESTS = 200
SIGTERM_BACKLOG = {"maildir": 200, "imap": 100}
SIGTERM_DELAY = {"maildir": (0.0, 0.25), "imap": (0.05, 0.5)}   # seconds after daemon.started


def seed() -> int:
    """The session seed (tests/seeds.py): fixed in CI, fresh under SMARTACCT_SOAK."""
    return SEED


def say(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}", flush=True)


def imap_install(root: Path, dovecot: Dovecot, relay: SmtpRelay, accounts: int) -> Install:
    """Every address the scenario writes to is a Dovecot user: the relay refuses no one."""
    for user in {SHARED, *(addr for n in range(accounts) for addr in Account(n).addresses)}:
        dovecot.add_user(user)
    install = Install(root, backends=backends(dovecot, relay))
    install.env["SMARTACCT_IMAP_PASSWORD"] = "secret"
    return install


@pytest.fixture
def harnesses() -> Iterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for h in made:
        h.close()


def storm(site: Site, requests: int, label: str, harnesses: list[Harness],
          capsys: pytest.CaptureFixture[str]) -> Harness:
    h = Harness(site, seed())
    harnesses.append(h)
    say(capsys, f"crash-safety {label}: seed={h.seed} requests={requests}")
    started = time.monotonic()
    accounts = h.scenario(requests)
    assert h.finish() == 0
    h.check(accounts)
    assert h.figures.kills_with_work_left >= 10, "too few kills landed while there was work to do"
    say(capsys, h.summary(label, time.monotonic() - started, requests))
    return h


def test_sigkill_at_random_moments_maildir(tmp_path: Path, harnesses: list[Harness],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    h = storm(MaildirSite(Install(tmp_path)), MAILDIR_REQUESTS, "maildir", harnesses, capsys)
    assert h.figures.duplicates == 0   # the outgoing Maildir replaces a resent file


def test_sigkill_at_random_moments_imap_smtp(tmp_path: Path, dovecot: Dovecot, smtp_server: SmtpRelay,
                                             harnesses: list[Harness],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    install = imap_install(tmp_path, dovecot, smtp_server, IMAP_REQUESTS)
    storm(ImapSite(install, dovecot, smtp_server), IMAP_REQUESTS, "imap+smtp", harnesses, capsys)


# --------------------------------------------------------------------------- SIGTERM


def no_half_state(h: Harness) -> None:
    """Each message is either handled, committed and filed, or untouched and still in the inbox."""
    rows = {key: (handled_at, folder, request_id) for key, handled_at, folder, request_id in
            h.query("SELECT key, handled_at, folder, request_id FROM incoming_message")}
    for raw in h.site.folder(""):
        row = rows.get("mid:" + message_id_of(raw))
        assert row is None or row[0] is None, f"{message_id_of(raw)} handled but still in the inbox"
    processed = h.site.folder("Processed")
    kinds = {rid: kind for rid, kind in h.query("SELECT request_id, kind FROM outbox")}
    for raw in processed:
        handled_at, folder, request_id = rows["mid:" + message_id_of(raw)]
        assert handled_at is not None and folder == "processed" and request_id is not None
        assert kinds.get(request_id) == "review", f"the review of request {request_id} is not in the outbox"
    assert sum(1 for handled_at, _, _ in rows.values() if handled_at is not None) == len(processed)
    assert h.query("SELECT count(*) FROM request")[0][0] == len(processed)


def sigterm_rounds(h: Harness, backlog: int, delay: tuple[float, float]) -> int:
    """SIGTERM at random moments of a backlog until it is done; the rounds that stopped with work left."""
    h.deliver([Account(n).request() for n in range(backlog)])
    interrupted = 0
    while True:
        assert len(h.incarnations) < 100, "the daemon makes no progress between SIGTERMs"
        before = len(h.install.log())
        starts = h.install.log().count("daemon.started")
        h.start()
        wait_for(lambda: h.install.log().count("daemon.started") > starts)
        time.sleep(h.kill_rng.uniform(*delay))
        assert h.terminate(timeout=20) == 0
        log = h.install.log()[before:]
        assert "daemon.stopping signal=SIGTERM" in log and "daemon.stopped" in log
        after = log.split("daemon.stopping", 1)[1]
        # Filing what was committed before the signal is fine (messages are filed in batches);
        # handling a new message or sending another email after it is not.
        assert after.count("request.created") + after.count("email.sent") <= 1, "went on after the one in hand"
        no_half_state(h)
        if not h.work_left():
            break
        interrupted += 1
    assert len(h.site.folder("Processed")) == backlog
    assert h.query("SELECT count(*) FROM outbox WHERE state = 'sent'")[0][0] == backlog
    return interrupted


def test_sigterm_stops_after_the_message_in_hand_maildir(tmp_path: Path, harnesses: list[Harness],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    h = Harness(MaildirSite(Install(tmp_path)), seed())
    harnesses.append(h)
    interrupted = sigterm_rounds(h, SIGTERM_BACKLOG["maildir"], SIGTERM_DELAY["maildir"])
    assert interrupted >= 1
    say(capsys, f"sigterm maildir: seed={h.seed} stops={len(h.incarnations)} with-work-left={interrupted}")


def test_sigterm_stops_after_the_message_in_hand_imap_smtp(
        tmp_path: Path, dovecot: Dovecot, smtp_server: SmtpRelay, harnesses: list[Harness],
        capsys: pytest.CaptureFixture[str]) -> None:
    install = imap_install(tmp_path, dovecot, smtp_server, SIGTERM_BACKLOG["imap"])
    h = Harness(ImapSite(install, dovecot, smtp_server), seed())
    harnesses.append(h)
    interrupted = sigterm_rounds(h, SIGTERM_BACKLOG["imap"], SIGTERM_DELAY["imap"])
    assert interrupted >= 1
    say(capsys, f"sigterm imap+smtp: seed={h.seed} stops={len(h.incarnations)} with-work-left={interrupted}")
