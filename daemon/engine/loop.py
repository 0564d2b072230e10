"""The daemon's main loop: ingest, due checks, drain the outbox, then wait for mail (DESIGN §6).

Each message goes through the per-message boundary (daemon.engine.attempts), so one bad
message never stops the others; what escapes it (the mailbox or the database away) makes
the loop back off here.
"""

from __future__ import annotations

import queue
import random
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import peewee
import schedule

from daemon import events, log
from daemon.errors import MailboxError
from daemon.engine.claims import Claims
from models.locks import unlock_many

if TYPE_CHECKING:
    from daemon.clock import Clock
    from daemon.engine.attempts import Attempts
    from daemon.engine.checks import Checks
    from daemon.engine.ingest import Handled
    from daemon.engine.outbox import Outbox
    from daemon.mail.mailbox import Mailbox
    from daemon.ops.sdnotify import Notifier

MAX_BACKOFF = 60.0
FILE_BATCH = 100


@dataclass
class Loop:
    """The daemon: what it works with, wired in daemon.app.build()."""

    mailbox: Mailbox
    attempts: Attempts
    checks: Checks
    outbox: Outbox
    db: peewee.Database
    clock: Clock
    notifier: Notifier
    alive: Callable[[], None]
    stop: threading.Event
    check_interval: int               # whole seconds, as every config duration is
    poll_interval: float              # seconds
    prepare: Callable[[], None]       # once at start: compile the templates
    started: Mapping[str, str] = field(default_factory=dict)   # what daemon.started names (daemon.app.startup)

    def run(self, *, once: bool = False) -> None:
        """Ingest, due checks, drain the outbox, wait for mail; until stopped (or one pass)."""
        scheduler = schedule.Scheduler()
        scheduler.every(self.check_interval).seconds.do(self.checks.run)
        restore = _stop_on_signals(self.stop)
        self.prepare()
        log.event(events.DAEMON_STARTED, **self.started, once=once)
        failures = 0
        ready = False
        try:
            self.checks.run()   # catch up after downtime before anything else
            while not self.stop.is_set():
                self.alive()   # /healthz: the loop is alive
                try:
                    self.ingest_waiting()
                    scheduler.run_pending()
                    self.outbox.drain()
                    failures = 0
                except MailboxError as exc:
                    # The mailbox reconnects inside wait(), with its own backoff and log lines.
                    log.event(events.MAILBOX_UNAVAILABLE, error=str(exc))
                    self.mailbox.wait(min(MAX_BACKOFF, self.notifier.max_sleep() or MAX_BACKOFF), self.stop)
                    continue
                except (peewee.OperationalError, peewee.InterfaceError) as exc:
                    # The database is away: wait, then try again; nothing is lost meanwhile.
                    failures += 1
                    delay = min(MAX_BACKOFF, 2.0 ** failures) * random.uniform(0.5, 1.0)
                    log.event(events.DATABASE_UNAVAILABLE, error=f"{type(exc).__name__}: {exc}",
                              retry_in=f"{delay:.1f}s")
                    self._drop_connection()
                    self.stop.wait(delay)
                    continue
                if once:
                    break
                if not ready:  # systemd (Type=notify): up once the first pass is through
                    self.notifier.ready()
                    ready = True
                self.mailbox.wait(self._wait_seconds(scheduler), self.stop)
        finally:
            self.notifier.stopping()
            restore()
            log.event(events.DAEMON_STOPPED)

    def ingest_waiting(self) -> int:
        """Handle every waiting message; a failing one is retried, then quarantined.

        Handled messages are filed in batches (one IMAP MOVE per folder per batch), always
        after their commit: a crash in between only means they are seen again, as duplicates.
        After each batch is filed and its locks released, the outbox drains, so the first
        answers of a burst go out while the rest of it waits, not after the whole inbox.
        """
        handled: list[tuple[str, Handled]] = []
        held: list[str] = []  # message locks, kept until the message is filed
        claims = Claims(self.db)  # taken before a batch's bodies are fetched (DESIGN §8)
        total = 0
        try:
            for item in self.mailbox.fetch(claims.take):
                self.alive()
                if self.stop.is_set():
                    break
                done = self.attempts.handle(item, held, claimed=claims.arrived(item.key))
                if done is not None:
                    handled.append((item.key, done))
                if len(handled) >= FILE_BATCH:
                    total += self._file(handled)
                    self._release(held)
                    self.outbox.drain()
            if handled:
                total += self._file(handled)
        finally:
            try:
                claims.release()
            finally:
                self._release(held)
        return total

    def _release(self, held: list[str]) -> None:
        unlock_many(self.db, held)
        held.clear()

    def _file(self, handled: list[tuple[str, Handled]]) -> int:
        self.mailbox.file_many([(key, done.folder) for key, done in handled])
        for key, done in handled:
            log.event(events.MESSAGE_FILED, ref=done.ref, key=key, folder=done.folder.value)
        count = len(handled)
        handled.clear()
        return count

    def _drop_connection(self) -> None:
        """A broken connection is closed, so the next query opens a fresh one (PostgreSQL restarts)."""
        try:
            self.db.close()
        except peewee.PeeweeException as exc:  # closing a dead connection can fail too; we reconnect anyway
            log.event(events.DATABASE_CLOSED, error=str(exc))

    def _wait_seconds(self, scheduler: schedule.Scheduler) -> float:
        wait = self.poll_interval
        if scheduler.idle_seconds is not None:
            wait = min(wait, max(0.0, scheduler.idle_seconds))
        watchdog = self.notifier.max_sleep()
        if watchdog is not None:
            wait = min(wait, watchdog)
        next_mail = self.outbox.next_due()
        if next_mail is not None:
            wait = min(wait, max(0.0, (next_mail - self.clock.now()).total_seconds()))
        return max(wait, 0.05)


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT finish the message in hand, then stop; SIGHUP reopens the log file.

    The handlers only queue the signal and a thread acts on it: a handler runs between two
    bytecodes of the main thread, maybe inside a write to the log file (a log line written
    there is lost to a reentrant call into the file's buffer) or inside the stop event's own
    lock (setting it there would deadlock).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    received: queue.SimpleQueue[int] = queue.SimpleQueue()   # put() is safe from a signal handler

    def act() -> None:
        while (signum := received.get()) != _DONE:
            if signum == signal.SIGHUP:
                log.reopen()
            else:
                log.event(events.DAEMON_STOPPING, signal=signal.Signals(signum).name)
                stop.set()

    def on_signal(signum: int, frame: Any) -> None:
        received.put(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    thread = threading.Thread(target=act, name="signals", daemon=True)
    thread.start()

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)
        received.put(_DONE)   # after what was queued: a last SIGTERM is still logged
        thread.join()
    return restore


_DONE = 0   # no signal has number 0
