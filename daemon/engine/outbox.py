"""The outbox sender: due rows go out over one transport session; each row ends sent, retried or failed.

A row's bytes and Message-ID were fixed when it was queued, so a resend after a crash
is recognisably the same email (DESIGN §4). The retry decision is a pure function.
An answer to one email (4xx/5xx to MAIL, RCPT or DATA) is that row's; a failed session
(SessionFailure) is nobody's: the drain stops there, charges no row, logs one line and
lets the transport back off, so a wrong password costs one login, not one per row.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import peewee

from daemon import events, log
from daemon.core.decide import decide_refused
from daemon.core.guard import HOUR, send_at
from daemon.engine.apply import Store, ref_of
from daemon.errors import DeliveryError, PermanentFailure, SessionFailure, TemporaryFailure
from models.locks import is_postgres
from models.outbox import OutboxRow, OutboxState, redacted
from models.request import Request

if TYPE_CHECKING:
    from daemon.mail.transport import Transport
    from daemon.ops.counters import Metrics

BACKOFF_BASE = dt.timedelta(seconds=5)
BACKOFF_CAP = dt.timedelta(minutes=5)
GIVE_UP_BATCH = 500     # rows failed for their age after one session failure, at most


@dataclass(frozen=True)
class Retry:
    at: dt.datetime


@dataclass(frozen=True)
class GiveUp:
    reason: str


def after_temporary_failure(attempts: int, created_at: dt.datetime, now: dt.datetime,
                            give_up_after: dt.timedelta) -> Retry | GiveUp:
    """Exponential backoff from 5 s, capped at 5 min; failed once the row is older than give_up_after."""
    if now - created_at >= give_up_after:
        return GiveUp(f"still failing after {give_up_after}")
    delay = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, attempts - 1)))
    return Retry(now + delay)


@dataclass
class DrainResult:
    sent: int = 0
    retried: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Outbox:
    """Sends what the decisions queued, over one transport session per drain."""

    store: Store
    transport: Transport
    give_up_after: dt.timedelta
    max_per_hour: int            # emails to one address in any hour (DESIGN §4)
    metrics: Metrics
    alive: Callable[[], None]
    stop: threading.Event

    def drain(self) -> DrainResult:
        """Send every due row over one session; stop at the first session failure and back off.

        Each row is claimed (FOR UPDATE SKIP LOCKED on PostgreSQL) in a transaction that lasts
        until its outcome is written, so two instances never send the same row, and a crash
        rolls the claim back: the row stays queued and goes out again (DESIGN §4, §8).
        """
        result = DrainResult()
        transport, db = self.transport, self.store.db
        if not transport.backoff.ready(self.store.clock.now()):
            return result  # backing off after a session failure; next_due() wakes the loop in time
        sender = self.store.renderer.from_addr
        failure: SessionFailure | None = None
        answered = False  # the server took or answered at least one email: the session works
        sent: dict[str, list[dt.datetime]] = {}      # per recipient, what went out in the last hour
        held: dict[str, tuple[int, dt.datetime]] = {}
        with transport.session() as session:  # connects on the first send only
            while not self.stop.is_set():
                self.alive()
                with db.atomic():  # SQLite: the write lock; PostgreSQL: the row lock below
                    row = self._claim_next()
                    if row is None:
                        break
                    until = self._held_until(row.recipient, sent)
                    if until is not None:   # over the hourly cap: later, never lost
                        OutboxRow.update(next_try_at=until).where(OutboxRow.id == row.id).execute()
                        held[row.recipient] = (held.get(row.recipient, (0, until))[0] + 1, until)
                        continue
                    try:
                        where = session.send(bytes(row.body), sender, [row.recipient], row.message_id_hash)
                    except SessionFailure as exc:
                        # Not this email's fault: it stays queued as it was, with the reason to read.
                        OutboxRow.update(last_error=str(exc)[:1000]).where(OutboxRow.id == row.id).execute()
                        failure = exc
                        break
                    except TemporaryFailure as exc:
                        self._temporary(row, exc, result)
                    except PermanentFailure as exc:
                        self._permanent(row, exc, result)
                    else:
                        self._sent(row, result, where)
                        sent[row.recipient].append(self.store.clock.now())
                    answered = True
        for recipient, (count, until) in held.items():
            log.event(events.EMAIL_DELAYED, to=recipient, emails=count, until=until, reason="hourly_cap",
                      cap=self.max_per_hour)
        if failure is not None:
            self._session_failed(failure, result)
        elif answered and transport.backoff.succeeded():
            log.event(events.OUTBOX_RESUMED, sent=result.sent)
        return result

    def _held_until(self, recipient: str, sent: dict[str, list[dt.datetime]]) -> dt.datetime | None:
        """When `recipient` may get the next email under the hourly cap; None: now."""
        now = self.store.clock.now()
        if recipient not in sent:
            sent[recipient] = list(OutboxRow.select(OutboxRow.sent_at).where(
                (OutboxRow.recipient == recipient) & (OutboxRow.state == OutboxState.sent.value)
                & (OutboxRow.sent_at > now - HOUR)).scalars())
        return send_at(sent[recipient], now, self.max_per_hour)

    def next_due(self) -> dt.datetime | None:
        """When the next drain has something to do: the first due row, but not before the backoff ends."""
        row = (OutboxRow.select(OutboxRow.next_try_at).where(OutboxRow.state == OutboxState.queued.value)
               .order_by(OutboxRow.next_try_at).first())
        if row is None:
            return None
        due: dt.datetime = row.next_try_at
        until = self.transport.backoff.until
        return max(due, until) if until is not None else due

    def _session_failed(self, exc: SessionFailure, result: DrainResult) -> None:
        """One WARNING line for the whole queue, the transport's backoff, and the emails too old to wait."""
        now = self.store.clock.now()
        retry_at = self.transport.backoff.failed(now)
        waiting = OutboxRow.select().where(OutboxRow.state == OutboxState.queued.value).count()
        log.event(events.OUTBOX_PAUSED, error=str(exc), queued=waiting, attempt=self.transport.backoff.failures,
                  retry_at=retry_at)
        self._give_up_overdue(now, exc, result)

    def _give_up_overdue(self, now: dt.datetime, exc: SessionFailure, result: DrainResult) -> None:
        """Rows queued longer than give_up_after are failed now: with no session they get no answer
        of their own, yet give_up_after must hold for them too (DESIGN §5)."""
        db = self.store.db
        with db.atomic():
            query = (OutboxRow.select()
                     .where((OutboxRow.state == OutboxState.queued.value)
                            & (OutboxRow.created_at <= now - self.give_up_after))
                     .order_by(OutboxRow.id).limit(GIVE_UP_BATCH))
            if is_postgres(db):
                query = query.for_update(skip_locked=True)  # rows another instance is sending are its own
            for row in query:
                self._fail(row, f"{exc} (still failing after {self.give_up_after})", result)

    def _claim_next(self) -> OutboxRow | None:
        db = self.store.db
        sql = _CLAIM.format(param=db.param)
        if is_postgres(db):
            sql += " FOR UPDATE SKIP LOCKED"  # rows another instance is sending are passed over
        now = OutboxRow._meta.fields["next_try_at"].db_value(self.store.clock.now())
        return next(iter(peewee.ModelRaw(OutboxRow, sql, (now,)).execute()), None)

    def _sent(self, row: OutboxRow, result: DrainResult, where: str | None = None) -> None:
        now = self.store.clock.now()
        # Sent: the stored copy keeps no usable code (DESIGN §3). `where`: the Maildir file, for `outbox list`.
        OutboxRow.update(state=OutboxState.sent.value, sent_at=now, attempts=OutboxRow.attempts + 1,
                         last_error=None, body=redacted(bytes(row.body)),
                         maildir_file=where or row.maildir_file).where(OutboxRow.id == row.id).execute()
        result.sent += 1
        self.metrics.emails_sent.labels(row.kind).inc()
        log.event(events.EMAIL_SENT, ref=ref_of(row.request_id), kind=row.kind, to=row.recipient, outbox=row.id)

    def _temporary(self, row: OutboxRow, exc: DeliveryError, result: DrainResult) -> None:
        now = self.store.clock.now()
        attempts = row.attempts + 1
        decision = after_temporary_failure(attempts, row.created_at, now, self.give_up_after)
        if isinstance(decision, GiveUp):
            self._fail(row, f"{exc} ({decision.reason})", result)
            return
        OutboxRow.update(attempts=attempts, next_try_at=decision.at, last_error=str(exc)[:1000]) \
            .where(OutboxRow.id == row.id).execute()
        result.retried += 1
        self.metrics.emails_deferred.labels(row.kind).inc()
        log.event(events.EMAIL_DEFERRED, ref=ref_of(row.request_id), kind=row.kind, to=row.recipient,
                  attempts=attempts, retry_at=decision.at, error=str(exc))

    def _permanent(self, row: OutboxRow, exc: DeliveryError, result: DrainResult) -> None:
        self._fail(row, str(exc), result)
        req = Request.get_or_none(Request.id == row.request_id) if row.request_id else None
        if req is not None:
            self.store.apply(decide_refused(req, row.kind, row.recipient, str(exc)))

    def _fail(self, row: OutboxRow, error: str, result: DrainResult) -> None:
        OutboxRow.update(state=OutboxState.failed.value, attempts=OutboxRow.attempts + 1, last_error=error[:1000]) \
            .where(OutboxRow.id == row.id).execute()
        result.failed += 1
        self.metrics.emails_failed.labels(row.kind).inc()
        log.event(events.EMAIL_FAILED, ref=ref_of(row.request_id), kind=row.kind, to=row.recipient, error=error)


# Prepared once, not built by the ORM per row: claiming the next row is one probe of the
# outbox_claim index (state, next_try_at, id), however long the queue is.
_CLAIM = ("SELECT * FROM outbox WHERE state = 'queued' AND next_try_at <= {param} "
          "ORDER BY next_try_at, id LIMIT 1")
