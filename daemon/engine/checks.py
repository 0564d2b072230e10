"""Scheduled checks: reminders, expiry and lapse, read from the indexed `due_at` column.

`schedule` only wakes this up; what is due comes from durable timestamps and `now`
(DESIGN §4), so downtime delays a reminder or an expiry but never skips or repeats one.
A check that fails for one request is rolled back, logged and retried for that request
later, its `due_at` pushed forward; the others go on (DESIGN §4). Only a database that
is away stops the pass: that is the loop's to back off from.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import peewee

from daemon import events, log
from daemon.core.decide import decide_due
from daemon.engine.apply import ConcurrentChange, Store
from models.event import Event
from models.locks import exclusive
from models.request import Request

if TYPE_CHECKING:
    from daemon.ops.counters import Metrics

BATCH = 500
RETRY_CAP = dt.timedelta(hours=1)   # a broken request is retried at least this often, forever
FAILED = events.CHECK_FAILED.name   # its timeline event, as its log line


@dataclass(frozen=True)
class Checks:
    """The scheduled checks over the database; `alive` shows the loop's life per request."""

    store: Store
    metrics: Metrics
    alive: Callable[[], None]
    stop: threading.Event

    def run(self) -> int:
        """One pass over everything due at this moment; returns how many requests were acted on."""
        with exclusive(self.store.db, "scheduled-checks") as mine:
            if not mine:
                return 0  # another instance is running this pass right now (DESIGN §8)
            with self.metrics.check_duration.time():
                return self._run()

    def _run(self) -> int:
        store = self.store
        now = store.clock.now()
        acted = 0
        after: tuple[dt.datetime, int] | None = None  # keyset paging on the partial index request_due
        while not self.stop.is_set():
            query = Request.select().where(Request.due_at.is_null(False) & (Request.due_at <= now))
            if after is not None:
                due_at = Request._meta.fields["due_at"].db_value(after[0])  # a row value is not converted for us
                query = query.where(peewee.Tuple(Request.due_at, Request.id) > peewee.Tuple(due_at, after[1]))
            batch = list(query.order_by(Request.due_at, Request.id).limit(BATCH))
            if not batch:
                break
            for req in batch:
                self.alive()
                after = (req.due_at, req.id)
                seen = (req.state, req.due_at)   # as read: a failed transition may have changed req in memory
                applier = store.applier(now=now)
                try:
                    with store.db.atomic():
                        decision = decide_due(req, now, store.workflow)
                        applier.apply(decision)
                except ConcurrentChange:
                    continue  # a reply or another instance moved it first: nothing left to do here
                except (peewee.OperationalError, peewee.InterfaceError):
                    raise     # the database is away, not this request: the loop backs off
                except Exception as exc:  # the per-request boundary: rolled back already; log, retry later
                    _postpone(store, req, seen, now, exc)
                    continue
                applier.flush_log()
                acted += bool(decision.events)
        if acted:
            log.event(events.CHECKS_DONE, acted=acted)
        return acted


def retry_delay(failures: int, interval: dt.timedelta) -> dt.timedelta:
    """The wait before retrying a request whose check failed `failures` times in a row:
    the next pass, then doubling, capped so it is never skipped for long."""
    return min(RETRY_CAP, interval * (1 << min(max(failures - 1, 0), 20)))


def _postpone(store: Store, req: Request, seen: tuple[str, dt.datetime], now: dt.datetime, exc: Exception) -> None:
    """Push the failed request's `due_at` forward, note it in its timeline, one ERROR line."""
    failures = 1 + _failed_in_a_row(req)
    retry_at = now + retry_delay(failures, store.workflow.check_interval)
    error = f"{type(exc).__name__}: {exc}"[:500]
    state, due_at = seen
    with store.db.atomic():
        moved = (Request.update(due_at=retry_at)
                 .where((Request.id == req.id) & (Request.state == state) & (Request.due_at == due_at))
                 .execute())
        if moved != 1:
            return  # changed meanwhile (a reply, another instance): its new due_at stands
        store.applier(now=now).event(req, FAILED, attempt=failures, error=error, retry_at=retry_at)
    log.event(events.CHECK_FAILED, ref=req.ref, attempt=failures, retry_at=retry_at, error=error)


def _failed_in_a_row(req: Request) -> int:
    """How many checks of this request failed since the last thing that went right (its timeline)."""
    latest = (Event.select(Event.name).where(Event.request_id == req.id)
              .order_by(Event.id.desc()).limit(30))
    return sum(1 for _ in itertools.takewhile(lambda e: e.name == FAILED, latest))
