"""Scheduled checks in-process with a clock the test sets: index-driven, exactly once, any batch size."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import peewee
import pytest

from daemon.engine import checks
from daemon.app import App, build
from daemon.clock import FixedClock
from daemon.config import from_dict
from models.event import Event
from models.outbox import OutboxRow
from models.request import Request

# The checks page through due requests under locks: every test here on SQLite and PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_databases

DAY = dt.timedelta(days=1)


def make_app(tmp_path: Path, database_url: str | None) -> tuple[App, FixedClock]:
    data: dict[str, Any] = {"workflow": {"partner_domains": ["partner.example"]}}
    if database_url:
        data["database"] = {"url": database_url}
    cfg = from_dict(data, base=tmp_path, environ={})
    clock = FixedClock()
    return build(cfg, clock=clock), clock


def pending_requests(app: App, count: int, confirmed: dt.datetime) -> None:
    wf = app.config.workflow
    rows = [dict(state="pending_acceptance", language="en", partner_email=f"p{n}@partner.example",
                 account_name=f"Co {n}", customer_email=f"c@d{n}.example", account_domain=f"d{n}.example",
                 created_at=confirmed, updated_at=confirmed, confirmed_at=confirmed,
                 expires_at=confirmed + wf.acceptance_window, due_at=confirmed + wf.reminders[0])
            for n in range(count)]
    with app.db.atomic():
        for start in range(0, count, 200):
            Request.insert_many(rows[start:start + 200]).execute()


def test_every_due_request_is_handled_once_across_batches(tmp_path: Path, database_url: str | None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "BATCH", 40)  # many pages, few emails
    app, clock = make_app(tmp_path, database_url)
    count = checks.BATCH * 2 + 7  # same due_at for all: paging must not skip or repeat
    pending_requests(app, count, clock.now())
    assert app.checks.run() == 0
    clock.advance(8 * DAY)
    assert app.checks.run() == count
    assert app.checks.run() == 0
    assert OutboxRow.select().where(OutboxRow.kind == "reminder").count() == count
    clock.advance(23 * DAY)  # day 31: the second reminder
    assert app.checks.run() == count
    clock.advance(60 * DAY)  # day 91: expired
    assert app.checks.run() == count
    assert Request.select().where(Request.state == "expired").count() == count
    assert app.checks.run() == 0
    app.outbox.drain()
    assert len(list((tmp_path / "var" / "outbox" / "new").iterdir())) == count * 4
    app.close()


@contextlib.contextmanager
def database_held(app: App, database_url: str | None, tmp_path: Path) -> Iterator[None]:
    """Another session holds the write lock (SQLite) or every request row (PostgreSQL), and we do not wait."""
    if database_url is None:
        app.db.execute_sql("PRAGMA busy_timeout = 0")
        other = sqlite3.connect(tmp_path / "var" / "smartacct.db")
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.rollback()
            other.close()
            app.db.execute_sql("PRAGMA busy_timeout = 30000")
        return
    import psycopg

    app.db.execute_sql("SET lock_timeout = '50ms'")
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT id FROM request FOR UPDATE")
        try:
            yield
        finally:
            conn.rollback()
    app.db.execute_sql("SET lock_timeout = 0")


def failures_logged(caplog: pytest.LogCaptureFixture, ref: str) -> list[dict[str, Any]]:
    return [getattr(r, "fields", {}) for r in caplog.records
            if r.getMessage() == "check.failed" and getattr(r, "fields", {}).get("ref") == ref]


def test_a_request_that_fails_is_retried_with_backoff_and_the_others_go_on(
        tmp_path: Path, database_url: str | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smartacct")
    app, clock = make_app(tmp_path, database_url)
    pending_requests(app, 3, clock.now())
    Request.update(language="xx").where(Request.id == 2).execute()    # no email can be rendered for it
    interval = app.config.workflow.check_interval
    clock.advance(8 * DAY)
    assert app.checks.run() == 2                 # the two healthy ones got their reminder
    assert app.checks.run() == 0                 # the broken one is not retried in a tight loop
    bad = Request.get_by_id(2)
    assert bad.reminders_sent == 0 and bad.due_at == clock.now() + interval
    [line] = failures_logged(caplog, "SA-000002")
    assert line["attempt"] == 1 and "unsupported language 'xx'" in line["error"]

    clock.advance(interval)
    with database_held(app, database_url, tmp_path), pytest.raises(peewee.OperationalError):
        app.checks.run()                         # the database, not the request: for the loop to back off
    assert len(failures_logged(caplog, "SA-000002")) == 1

    for attempt, wait in ((2, 2), (3, 4)):             # retried on later passes, the wait doubling
        clock.advance(Request.get_by_id(2).due_at - clock.now())
        assert app.checks.run() == 0
        assert Request.get_by_id(2).due_at == clock.now() + wait * interval
        assert failures_logged(caplog, "SA-000002")[-1]["attempt"] == attempt
    assert [e.name for e in Event.select().where(Event.request_id == 2)] == ["check.failed"] * 3

    Request.update(language="en").where(Request.id == 2).execute()    # repaired: never skipped for good
    clock.advance(Request.get_by_id(2).due_at - clock.now())
    assert app.checks.run() == 1
    assert OutboxRow.select().where(OutboxRow.kind == "reminder").count() == 3
    assert Request.get_by_id(2).reminders_sent == 1
    app.close()

