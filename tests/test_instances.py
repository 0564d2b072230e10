"""Several instances sharing the work (issue 7, item 2; DESIGN §8): three `smartacct run`
processes on one mailbox and one PostgreSQL database, no coordinator but PostgreSQL.

A backlog of requests, then the partners' and the customers' replies, arrives in phases
(tests/crash_harness.py). The three instances start together on the first backlog and
stay up; in each phase one of them, chosen at random, is SIGKILLed when a random share
of the phase's work is done, and started again. A last phase restarts all three
together 15 days in the future, so the scheduled checks owe a lapse or a reminder to
many requests at once. At the end every request is recorded once in the state its
replies and the checks led to, every email due is in its recipient's mailbox once (a
second copy only where a kill explains it: the first copy was the last email of the
killed process), nothing is left in the inbox or quarantined, no log has an ERROR or
WARNING line, and every instance did part of the work.

Kill moments are random; the seed is printed (SMARTACCT_SEED replays a scenario; SMARTACCT_SOAK=1 draws fresh ones).
Each test prints one summary line with the figures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from crash_harness import SHARED, Account, Harness, ImapSite, MaildirSite, Site
from seeds import SEED
from e2e import Install
from pg import Postgres
from servers import Dovecot, SmtpRelay
from test_e2e_servers import backends

INSTANCES = 3
PHASES = 4                 # requests, the partners' replies, the customers' replies, the scheduled checks
IMAP_REQUESTS = 250
MAILDIR_REQUESTS = 300


def seed() -> int:
    """The session seed (tests/seeds.py): fixed in CI, fresh under SMARTACCT_SOAK."""
    return SEED


def say(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}", flush=True)


@pytest.fixture
def harnesses() -> Iterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for h in made:
        h.close()


def shared_work(site: Site, requests: int, label: str, harnesses: list[Harness],
                capsys: pytest.CaptureFixture[str]) -> Harness:
    h = Harness(site, seed(), instances=INSTANCES)
    harnesses.append(h)
    say(capsys, f"instances {label}: seed={h.seed} instances={INSTANCES} requests={requests}")
    started = time.monotonic()
    accounts = h.scenario(requests)
    h.scheduled_checks(accounts)
    assert h.finish() == 0
    h.check(accounts)
    say(capsys, h.summary(label, time.monotonic() - started, requests))
    f = h.figures
    # Nothing in this scenario deserves a warning: one is an instance tripping over another's work.
    warnings = [line for line in h.logs().splitlines() if " WARNING " in line]
    assert not warnings, "\n".join(warnings[:10])
    assert f.kills == PHASES
    assert f.kills_with_work_left >= PHASES - 1, "the kills did not land while there was work to do"
    # The work was shared: each instance handled messages of its own.
    handled = [s.handled for s in h.shares]
    assert all(n > 0 for n in handled), f"messages handled per instance: {handled}"
    return h


def test_three_instances_share_one_imap_mailbox(tmp_path: Path, postgres: Postgres, dovecot: Dovecot,
                                                 smtp_server: SmtpRelay, harnesses: list[Harness],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for user in {SHARED, *(addr for n in range(IMAP_REQUESTS) for addr in Account(n).addresses)}:
        dovecot.add_user(user)
    install = Install(tmp_path, database_url=postgres.fresh_database(), backends=backends(dovecot, smtp_server))
    install.env["SMARTACCT_IMAP_PASSWORD"] = "secret"
    shared_work(ImapSite(install, dovecot, smtp_server), IMAP_REQUESTS, "imap+smtp", harnesses, capsys)


def test_three_instances_share_one_maildir(tmp_path: Path, postgres: Postgres, harnesses: list[Harness],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    install = Install(tmp_path, database_url=postgres.fresh_database())
    shared_work(MaildirSite(install), MAILDIR_REQUESTS, "maildir", harnesses, capsys)
