"""Scheduled checks in-process with a clock the test sets: index-driven, exactly once, any batch size."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from daemon.engine import checks, outbox
from daemon.app import App, build
from daemon.clock import FixedClock
from daemon.config import from_dict
from models.outbox import OutboxRow
from models.request import Request

DAY = dt.timedelta(days=1)


def make_app(tmp_path: Path, database_url: str | None) -> tuple[App, FixedClock]:
    data = {"database": {"url": database_url}} if database_url else {}
    cfg = from_dict(data, base=tmp_path, environ={})
    clock = FixedClock()
    return build(cfg, clock=clock), clock


def pending_requests(app: App, count: int, confirmed: dt.datetime) -> None:
    wf = app.config.workflow
    rows = [dict(state="pending_acceptance", language="en", partner_email="p@partner.example",
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
    assert checks.run_checks(app) == 0
    clock.advance(8 * DAY)
    assert checks.run_checks(app) == count
    assert checks.run_checks(app) == 0
    assert OutboxRow.select().where(OutboxRow.kind == "reminder").count() == count
    clock.advance(23 * DAY)  # day 31: the second reminder
    assert checks.run_checks(app) == count
    clock.advance(60 * DAY)  # day 91: expired
    assert checks.run_checks(app) == count
    assert Request.select().where(Request.state == "expired").count() == count
    assert checks.run_checks(app) == 0
    outbox.drain(app)
    assert len(list((tmp_path / "var" / "outbox" / "new").iterdir())) == count * 4
    app.close()
