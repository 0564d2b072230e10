"""Scheduled checks: reminders, expiry and lapse, read from the indexed `due_at` column.

`schedule` only wakes this up; what is due comes from durable timestamps and `now`
(DESIGN §4), so downtime delays a reminder or an expiry but never skips or repeats one.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import peewee

from daemon import log
from daemon.core.decide import decide_due
from daemon.engine.apply import Applier, ConcurrentChange
from models.locks import exclusive
from models.request import Request

if TYPE_CHECKING:
    from daemon.app import App

BATCH = 500


def run_checks(app: App) -> int:
    """One pass over everything due at this moment; returns how many requests were acted on."""
    with exclusive(app.db, "scheduled-checks") as mine:
        if not mine:
            return 0  # another instance is running this pass right now (DESIGN §8)
        with app.metrics.check_duration.time():
            return _run_checks(app)


def _run_checks(app: App) -> int:
    now = app.clock.now()
    acted = 0
    after: tuple[dt.datetime, int] | None = None  # keyset paging on the partial index request_due
    while not app.stop.is_set():
        query = Request.select().where(Request.due_at.is_null(False) & (Request.due_at <= now))
        if after is not None:
            due_at = Request._meta.fields["due_at"].db_value(after[0])  # a row value is not converted for us
            query = query.where(peewee.Tuple(Request.due_at, Request.id) > peewee.Tuple(due_at, after[1]))
        batch = list(query.order_by(Request.due_at, Request.id).limit(BATCH))
        if not batch:
            break
        for req in batch:
            app.alive()
            after = (req.due_at, req.id)
            applier = Applier(app.renderer, now, app.config.workflow)
            try:
                with app.db.atomic():
                    decision = decide_due(req, now, app.config.workflow)
                    applier.apply(decision)
            except ConcurrentChange:
                continue  # a reply or another instance moved it first: nothing left to do here
            applier.flush_log()
            acted += bool(decision.events)
    if acted:
        log.event("checks.done", acted=acted)
    return acted
