"""`smartacct run` as a long-running subprocess on the embedded default: it notices new mail
by itself, runs the scheduled checks on its own clock, stops cleanly on SIGTERM and resumes."""

from __future__ import annotations

from typing import Iterator

import pytest

from e2e import Daemon, Install, Sent, good_fields, reply, request_email, wait_for
PARTNER = "paula@partner.example"
CUSTOMER = "carla@acme.example"


@pytest.fixture
def daemon(install: Install) -> Iterator[Daemon]:
    d = Daemon(install)
    yield d
    d.kill()


def next_emails(install: Install, count: int, timeout: float = 10.0) -> list[Sent]:
    got: list[Sent] = []

    def enough() -> bool:
        got.extend(install.new_sent())
        return len(got) >= count
    wait_for(enough, timeout)
    return got


def test_the_story_with_a_restart_in_the_middle(install: Install, daemon: Daemon) -> None:
    daemon.start()
    install.drop(request_email(good_fields()))
    [review] = next_emails(install, 1)
    assert review.to == PARTNER

    install.drop(reply(review, "CONFIRM"))
    sent = next_emails(install, 2)
    activation = next(s for s in sent if s.to == CUSTOMER)

    assert daemon.stop() == 0
    log = install.log()
    assert "daemon.stopping signal=SIGTERM" in log and "daemon.stopped" in log

    install.drop(reply(activation, "ACCEPT"))  # arrives while the daemon is down
    daemon.start()
    sent = next_emails(install, 4)
    assert sorted(s.to for s in sent) == sorted([PARTNER, CUSTOMER, "dev1@acme.example", "dev2@acme.example"])
    assert install.requests()[0]["state"] == "active"
    assert len(install.sent()) == 7  # nothing was sent twice across the restart


def test_short_windows_remind_and_expire_on_the_daemons_own_schedule(install: Install, daemon: Daemon) -> None:
    install.write_config('[workflow]\ncheck_interval = "1s"\nreminders = ["2s"]\nacceptance_window = "4s"\n')
    daemon.start()
    install.drop(request_email(good_fields()))
    [review] = next_emails(install, 1)
    install.drop(reply(review, "CONFIRM"))
    next_emails(install, 2)
    [reminder] = next_emails(install, 1, timeout=6)
    assert reminder.to == CUSTOMER
    expired = next_emails(install, 2, timeout=6)
    assert sorted(s.to for s in expired) == sorted([CUSTOMER, PARTNER])
    assert install.requests()[0]["state"] == "expired"
    assert "request.expired ref=SA-000001" in install.log()
