"""`smartacct run` as a long-running subprocess on the embedded default: it notices new mail
by itself, runs the scheduled checks on its own clock, stops cleanly on SIGTERM and resumes."""

from __future__ import annotations

import sqlite3
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


@pytest.mark.both_databases
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


def execute(install: Install, sql: str) -> None:
    """Change the installation's database behind the daemon's back, whichever it is."""
    if install.database_url:
        import psycopg

        with psycopg.connect(install.database_url) as conn:
            conn.execute(sql)  # type: ignore[arg-type]
    else:
        with sqlite3.connect(install.root / "var" / "smartacct.db") as db:
            db.execute(sql)


@pytest.mark.both_databases
def test_a_request_that_cannot_be_rendered_stops_neither_the_checks_nor_the_daemon(
        install: Install, daemon: Daemon) -> None:
    install.write_config('[workflow]\ncheck_interval = "1s"\n')
    for n in (1, 2, 3):
        install.drop(request_email(good_fields(domain=f"d{n}.example", customer_email=f"c@d{n}.example")))
    install.run_once()
    assert len(install.new_sent()) == 3                       # three reviews
    execute(install, "UPDATE request SET language = 'xx' WHERE id = 2")   # no email can be rendered for it
    install.offset = "15d"              # all three reviews lapsed while we were down

    daemon.start()                                             # the checks run first, at start
    lapsed = next_emails(install, 2)
    assert sorted(s.subject.split("]")[0] for s in lapsed) == ["[SA-000001", "[SA-000003"]
    states = {r["ref"]: r["state"] for r in install.requests()}
    assert states == {"SA-000001": "lapsed", "SA-000002": "awaiting_confirmation", "SA-000003": "lapsed"}
    wait_for(lambda: install.log().count("ERROR check.failed ref=SA-000002") >= 2)   # retried on a later pass
    assert daemon.proc is not None and daemon.proc.poll() is None

    install.drop(request_email(good_fields(domain="d4.example", customer_email="c@d4.example")))
    [review] = next_emails(install, 1)                         # the daemon goes on handling mail
    assert "[SA-000004]" in review.subject

    execute(install, "UPDATE request SET language = 'en' WHERE id = 2")   # the admin repairs the row
    [late] = next_emails(install, 1, timeout=30)               # the next retry (backoff: at most 8 s here)
    assert "[SA-000002]" in late.subject and late.to == PARTNER
    log = install.log()
    line = next(l for l in log.splitlines() if "check.failed ref=SA-000002" in l)
    assert "unsupported language" in line and "retry_at=" in line
    assert "Traceback" not in log
