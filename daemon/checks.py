"""Scheduled checks: reminders, expiry and lapse, read from the indexed `due_at` column.

`schedule` only wakes this up; what is due comes from durable timestamps and `now`
(DESIGN §4), so downtime delays a reminder or an expiry but never skips or repeats one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon import log
from daemon.effects import Effects
from daemon.workflow import Reminder, due, next_due, transition
from models.request import Request

if TYPE_CHECKING:
    from daemon.app import App

BATCH = 500


def run_checks(app: App) -> int:
    """One pass over everything due at this moment; returns how many requests were acted on."""
    now = app.clock.now()
    wf = app.config.workflow
    acted = 0
    last_id = 0
    while not app.stop.is_set():
        batch = list(Request.select()
                     .where(Request.due_at.is_null(False) & (Request.due_at <= now) & (Request.id > last_id))
                     .order_by(Request.id).limit(BATCH))
        if not batch:
            break
        for req in batch:
            last_id = req.id
            fx = Effects(app.renderer, now)
            with app.db.atomic():
                owed = due(req, now, wf)
                if isinstance(owed, Reminder):
                    updated = (Request.update(reminders_sent=owed.reminders_sent, due_at=owed.due_at, updated_at=now)
                               .where((Request.id == req.id) & (Request.reminders_sent == req.reminders_sent)
                                      & (Request.state == req.state))
                               .execute())
                    if updated == 1:
                        fx.event(req, "reminder.sent", number=owed.reminders_sent)
                        fx.log("reminder.sent", ref=req.ref, to=req.customer_email, number=owed.reminders_sent)
                        fx.send(owed.mail, req)
                        acted += 1
                elif owed is not None:
                    t = transition(req, owed, now, wf)
                    if t is not None:
                        fx.apply(req, t, by="check")
                        acted += 1
                else:  # nothing owed yet: move the bookmark to the next moment something will be
                    Request.update(due_at=next_due(req, wf)).where(Request.id == req.id).execute()
            fx.flush_log()
    if acted:
        log.event("checks.done", acted=acted)
    return acted
