"""The outbox sender: due rows, claimed a batch at a time under a lease, go out over one transport
session; each row ends sent, retried or failed in a commit of its own.

A row's bytes and Message-ID were fixed when it was queued, so a resend after a crash
is recognisably the same email (DESIGN §4). The retry decision is a pure function.
An answer to one email (4xx/5xx to MAIL, RCPT or DATA) is that row's; a failed session
(SessionFailure) is nobody's: the drain stops there, charges no row, logs one line and
lets the transport back off, so a wrong password costs one login, not one per row.

The lease: one statement claims up to CLAIM_BATCH due rows. They stay `queued` (DESIGN §6),
their next_try_at moves LEASE ahead and leased_by names this process (App.instance), so no
other drain takes them; no transaction is held while the server works. Each row is marked
the moment the server has answered for it. What a crash (SIGKILL, power) can do: the one
email in flight (taken by the server, not yet marked) goes out twice; every other row of the
batch is marked already or still leased, and nothing is lost: the next drain of any process
takes a dead holder's rows back at once (PostgreSQL: the holder's advisory lock is free;
SQLite: its process is gone from this host), or else when the lease has expired.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import peewee

from daemon import events, log
from daemon.core.decide import decide_refused
from daemon.core.guard import HOUR, send_at
from daemon.engine.apply import Store, ref_of
from daemon.errors import DeliveryError, PermanentFailure, SessionFailure, TemporaryFailure
from models.base import execute_sql
from models.locks import exclusive, is_postgres, lock, process_gone, unlock
from models.outbox import OutboxRow, OutboxState, redacted
from models.request import Request

if TYPE_CHECKING:
    from daemon.mail.transport import Session, Transport
    from daemon.ops.counters import Metrics

BACKOFF_BASE = dt.timedelta(seconds=5)
BACKOFF_CAP = dt.timedelta(minutes=5)
GIVE_UP_BATCH = 500     # rows failed for their age after one session failure, at most
CLAIM_BATCH = 100       # rows claimed by one statement
LEASE = dt.timedelta(minutes=5)   # how far a claimed row's next_try_at moves: no other drain takes it meanwhile
DRAIN_LOCK = "outbox-drain:"      # + App.instance: on PostgreSQL, held while that process drains


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


@dataclass
class _Drain:
    """What one drain learns as it goes."""

    result: DrainResult = field(default_factory=DrainResult)
    sent: dict[str, list[dt.datetime]] = field(default_factory=dict)   # per recipient, sent in the last hour
    held: dict[str, tuple[int, dt.datetime]] = field(default_factory=dict)   # over the hourly cap
    answered: bool = False          # the server took or answered at least one email: the session works
    failure: SessionFailure | None = None


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
    instance: str                # this process, as a lease names it (App.instance)

    def drain(self) -> DrainResult:
        """Send every due row over one session, a claimed batch at a time; stop at the first
        session failure and back off.

        Two processes never send the same row: a claim takes only rows nobody leases, in one
        statement (FOR UPDATE SKIP LOCKED on PostgreSQL, the write lock on SQLite) (DESIGN §4, §8).
        """
        transport = self.transport
        if not transport.backoff.ready(self.store.clock.now()):
            return DrainResult()  # backing off after a session failure; next_due() wakes the loop in time
        run = _Drain()
        with self._draining():
            self._take_back_leases()
            with transport.session() as session:  # connects on the first send only
                while not self.stop.is_set() and run.failure is None:
                    batch = self._claim()
                    if batch:
                        self._send_batch(batch, session, run)
                    if len(batch) < CLAIM_BATCH:
                        break   # all that was due; what falls due meanwhile waits for the next drain
        for recipient, (count, until) in run.held.items():
            log.event(events.EMAIL_DELAYED, to=recipient, emails=count, until=until, reason="hourly_cap",
                      cap=self.max_per_hour)
        if run.failure is not None:
            self._session_failed(run.failure, run.result)
        elif run.answered and transport.backoff.succeeded():
            log.event(events.OUTBOX_RESUMED, sent=run.result.sent)
        return run.result

    def _send_batch(self, batch: list[OutboxRow], session: Session, run: _Drain) -> None:
        """Each row sent, then marked in a commit of its own. What is left when the drain stops early
        (stop, a session failure, an error) is released, due again at once: those emails are not to
        blame and go out with the next session that works, here or in another process, rather
        than after the lease."""
        sender = self.store.renderer.from_addr
        self._recent({row.recipient for row in batch} - run.sent.keys(), run.sent)
        done = 0
        try:
            for row in batch:
                if self.stop.is_set():
                    break
                self.alive()
                until = send_at(run.sent[row.recipient], self.store.clock.now(), self.max_per_hour)
                if until is not None:   # over the hourly cap: later, never lost
                    self._execute(_HOLD, (_db_time(until), row.id))
                    run.held[row.recipient] = (run.held.get(row.recipient, (0, until))[0] + 1, until)
                    done += 1
                    continue
                try:
                    where = session.send(bytes(row.body), sender, [row.recipient], row.message_id_hash)
                except SessionFailure as exc:
                    # Not this email's fault: it is released with the rest, with the reason to read.
                    self._execute(_NOTE, (str(exc)[:1000], row.id))
                    run.failure = exc
                    break
                except TemporaryFailure as exc:
                    self._temporary(row, exc, run.result)
                except PermanentFailure as exc:
                    self._permanent(row, exc, run.result)
                else:
                    self._sent(row, run.result, where)
                    run.sent[row.recipient].append(self.store.clock.now())
                run.answered = True
                done += 1
        except BaseException:
            with contextlib.suppress(peewee.PeeweeException):  # the database away: the next drain takes them back
                self._release()
            raise
        if done < len(batch):
            self._release()

    def _recent(self, recipients: set[str], sent: dict[str, list[dt.datetime]]) -> None:
        """When the emails to `recipients` sent in the last hour went out, for the hourly cap: one
        statement per batch."""
        if not recipients:
            return
        db = self.store.db
        for recipient in recipients:
            sent[recipient] = []
        ordered = sorted(recipients)
        sql = _RECENT.format(p=db.param, recipients=", ".join([db.param] * len(ordered)))
        since = _db_time(self.store.clock.now() - HOUR)
        to_python = OutboxRow.sent_at.python_value
        for recipient, at in execute_sql(db, sql, (since, *ordered)).fetchall():
            sent[recipient].append(to_python(at))

    def next_due(self) -> dt.datetime | None:
        """When the next drain has something to do: the first due row, but not before the backoff ends."""
        row = (OutboxRow.select(OutboxRow.next_try_at).where(OutboxRow.state == OutboxState.queued.value)
               .order_by(OutboxRow.next_try_at).first())
        if row is None:
            return None
        due: dt.datetime = row.next_try_at
        until = self.transport.backoff.until
        return max(due, until) if until is not None else due

    # --- the lease ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _draining(self) -> Iterator[None]:
        """On PostgreSQL, this process's drain lock for the length of the drain: while it is held,
        the rows it leases are being sent; once free (the drain over, the process dead), they are not."""
        db = self.store.db
        lock(db, DRAIN_LOCK + self.instance)   # waits only while another process checks on us
        try:
            yield
        finally:
            with contextlib.suppress(peewee.PeeweeException):   # a lost connection has let go already
                unlock(db, DRAIN_LOCK + self.instance)

    def _take_back_leases(self) -> None:
        """Rows leased by a drain that will never mark them are due again: one of ours that ended
        on an error, or a holder that is dead. A holder that may be alive keeps its rows until the
        lease expires (SQLite: a process on another host, or a pid taken since)."""
        db = self.store.db
        for (holder,) in execute_sql(db, _HOLDERS).fetchall():
            if holder == self.instance:
                self._release(holder)
            elif is_postgres(db):
                with exclusive(db, DRAIN_LOCK + holder) as free:
                    if free:         # not draining: its leased rows are nobody's
                        self._release(holder)
            elif process_gone(holder):
                self._release(holder)
            else:
                self._execute(_RELEASE_EXPIRED, (holder, _db_time(self.store.clock.now())))

    def _claim(self) -> list[OutboxRow]:
        """Up to CLAIM_BATCH due rows nobody leases, leased to this process, in one statement."""
        db = self.store.db
        now = self.store.clock.now()
        sql = _CLAIM.format(p=db.param, lock=" FOR UPDATE SKIP LOCKED" if is_postgres(db) else "")
        with db.atomic():   # SQLite: BEGIN IMMEDIATE, the write lock, against a CLI or a second `run --once`
            rows = list(peewee.ModelRaw(OutboxRow, sql, (_db_time(now + LEASE), self.instance, _db_time(now),
                                                         CLAIM_BATCH)).execute())
        rows.sort(key=lambda row: row.id)
        return rows

    def _release(self, holder: str | None = None) -> None:
        """`holder`'s leased rows (ours by default) due again, in their place in the queue."""
        self._execute(_RELEASE, (holder or self.instance,))

    def _execute(self, shape: str, params: tuple[object, ...]) -> None:
        execute_sql(self.store.db, shape.format(p=self.store.db.param), params)

    # --- outcomes -------------------------------------------------------------------------------

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
                     .where((OutboxRow.state == OutboxState.queued.value) & OutboxRow.leased_by.is_null()
                            & (OutboxRow.created_at <= now - self.give_up_after))
                     .order_by(OutboxRow.id).limit(GIVE_UP_BATCH))
            if is_postgres(db):
                query = query.for_update(skip_locked=True)  # rows another instance is claiming are its own
            for row in query:
                self._fail(row, f"{exc} (still failing after {self.give_up_after})", result)

    def _sent(self, row: OutboxRow, result: DrainResult, where: str | None = None) -> None:
        # Sent: the stored copy keeps no usable code (DESIGN §3). `where`: the Maildir file, for `outbox list`.
        self._execute(_SENT, (_db_time(self.store.clock.now()), redacted(bytes(row.body)), where, row.id))
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
        OutboxRow.update(attempts=attempts, next_try_at=decision.at, last_error=str(exc)[:1000], leased_by=None) \
            .where(OutboxRow.id == row.id).execute()
        result.retried += 1
        self.metrics.emails_deferred.labels(row.kind).inc()
        log.event(events.EMAIL_DEFERRED, ref=ref_of(row.request_id), kind=row.kind, to=row.recipient,
                  attempts=attempts, retry_at=decision.at, error=str(exc))

    def _permanent(self, row: OutboxRow, exc: DeliveryError, result: DrainResult) -> None:
        req = Request.get_or_none(Request.id == row.request_id) if row.request_id else None
        with self.store.db.atomic():     # the row failed and what it means for the request: together
            self._fail(row, str(exc), result)
            if req is not None:
                self.store.apply(decide_refused(req, row.kind, row.recipient, str(exc)))

    def _fail(self, row: OutboxRow, error: str, result: DrainResult) -> None:
        OutboxRow.update(state=OutboxState.failed.value, attempts=OutboxRow.attempts + 1, last_error=error[:1000],
                         leased_by=None).where(OutboxRow.id == row.id).execute()
        result.failed += 1
        self.metrics.emails_failed.labels(row.kind).inc()
        log.event(events.EMAIL_FAILED, ref=ref_of(row.request_id), kind=row.kind, to=row.recipient, error=error)


def _db_time(at: dt.datetime) -> object:
    return OutboxRow.next_try_at.db_value(at)


# SQL per statement shape, prepared once rather than built by the ORM per row ({p}: the driver's
# parameter mark). The claim is one probe of the outbox_claim index (state, next_try_at, id).
_CLAIM = ("UPDATE outbox SET next_try_at = {p}, leased_by = {p} WHERE id IN ("
          "SELECT id FROM outbox WHERE state = 'queued' AND next_try_at <= {p} AND leased_by IS NULL "
          "ORDER BY next_try_at, id LIMIT {p}{lock}) RETURNING *")
_SENT = ("UPDATE outbox SET state = 'sent', sent_at = {p}, attempts = attempts + 1, last_error = NULL, "
         "body = {p}, maildir_file = COALESCE({p}, maildir_file), leased_by = NULL WHERE id = {p}")
_HOLD = "UPDATE outbox SET next_try_at = {p}, leased_by = NULL WHERE id = {p}"
_NOTE = "UPDATE outbox SET last_error = {p} WHERE id = {p}"
# Released rows were due when claimed: back to created_at, their place at the head of the queue, so
# the email in flight at a crash is the first one the next drain sends (nothing else in between).
_RELEASE = "UPDATE outbox SET next_try_at = created_at, leased_by = NULL WHERE leased_by = {p} AND state = 'queued'"
_RELEASE_EXPIRED = ("UPDATE outbox SET next_try_at = created_at, leased_by = NULL "
                    "WHERE leased_by = {p} AND state = 'queued' AND next_try_at <= {p}")
_HOLDERS = "SELECT DISTINCT leased_by FROM outbox WHERE leased_by IS NOT NULL"
_RECENT = ("SELECT recipient, sent_at FROM outbox WHERE state = 'sent' AND sent_at > {p} "
           "AND recipient IN ({recipients})")
