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

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from crash_harness import SHARED, Account, Harness, ImapSite, MaildirSite, Site
from seeds import SEED, seeded
from e2e import Install, good_fields, request_email, wait_for
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
    # The work was shared. Instances claim a batch before they fetch it (DESIGN §8), so one that
    # started late, or was the one killed in every phase, may find every batch taken: two of the
    # three handling messages is what sharing means, whatever the timing.
    handled = [s.handled for s in h.shares]
    assert sum(n > 0 for n in handled) >= 2, f"messages handled per instance: {handled}"
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


def test_each_message_is_fetched_by_one_instance(tmp_path: Path, postgres: Postgres, dovecot: Dovecot,
                                                 smtp_server: SmtpRelay, capsys: pytest.CaptureFixture[str]) -> None:
    """Instances claim a batch of messages before they download it (DESIGN §8): three started
    together on one backlog download each message's body once between them, by Dovecot's own
    count, and file each message once; what one skipped, another filed."""
    n = seeded("instances-fetched-once").randint(150, 260)   # one, two or three claim batches of 100
    partners = [f"p{i}@partner.example" for i in range(20)]  # at most 13 reviews each: under the hourly cap
    for user in (SHARED, *partners):
        dovecot.add_user(user)
    install = Install(tmp_path, database_url=postgres.fresh_database(), backends=backends(dovecot, smtp_server))
    install.env["SMARTACCT_IMAP_PASSWORD"] = "secret"
    dovecot.deliver_many(SHARED, [request_email(good_fields(domain=f"d{i}.example", account_name=f"Account {i}"),
                                                sender=partners[i % len(partners)]).as_bytes() for i in range(n)])
    logs = []
    procs = []
    for k in range(INSTANCES):
        config, log_file = tmp_path / f"config-{k}.toml", tmp_path / f"smartacct-{k}.log"
        config.write_text(install.config.read_text().replace('file = "smartacct.log"', f'file = "{log_file.name}"'))
        logs.append(log_file)
        procs.append(subprocess.Popen(install.command("-c", str(config), "run", "--once"), cwd=tmp_path,
                                      env={**os.environ, **install.env},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode(errors="replace")

    # Dovecot logs each session's logout with the bodies it sent (body_count).
    logouts = re.compile(rf"imap\({re.escape(SHARED)}\).*Logged out .*? body_count=(\d+)")
    sessions = wait_for(lambda: len(logouts.findall(dovecot.log)) >= INSTANCES and logouts.findall(dovecot.log))
    fetched = [int(count) for count in sessions]
    texts = [log.read_text(encoding="utf-8") for log in logs]
    filed = [re.findall(r" message\.filed .*?key=(\S+)", text) for text in texts]
    skipped = [re.findall(r" message\.skipped .*?key=(\S+)", text) for text in texts]
    all_filed = [key for keys in filed for key in keys]
    say(capsys, f"instances fetched-once: seed={SEED} messages={n} bodies fetched per session={fetched} "
                f"filed per instance={[len(k) for k in filed]} skipped per instance={[len(k) for k in skipped]}")

    assert sum(fetched) == n, f"{sum(fetched)} bodies downloaded for {n} messages: {fetched}"
    assert len(all_filed) == len(set(all_filed)) == n
    assert set(key for keys in skipped for key in keys) <= set(all_filed)
    for mine, theirs in zip(filed, skipped):
        assert not set(mine) & set(theirs)
    with dovecot.imap_client(SHARED) as client:
        assert client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0
        assert client.folder_status("Processed", ["MESSAGES"])[b"MESSAGES"] == n
    assert install.query("SELECT count(*), count(handled_at) FROM incoming_message") == [(n, n)]
    assert install.query("SELECT count(*) FROM request") == [(n,)]
    for text in texts:
        assert " message.duplicate " not in text
        assert not [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line]
