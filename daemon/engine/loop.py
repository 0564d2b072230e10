"""The daemon's main loop: ingest, due checks, drain the outbox, then wait for mail (DESIGN §6).

Each message goes through the per-message boundary (daemon.engine.attempts), so one bad message
never stops the others; what escapes it (the mailbox or the database away) makes the
loop back off here.
"""

from __future__ import annotations

import random
import signal
import threading
from typing import TYPE_CHECKING, Any

import peewee
import schedule

from daemon import log
from daemon.engine import attempts, checks, outbox
from daemon.errors import MailboxError
from models.message import Folder
from models.locks import unlock

if TYPE_CHECKING:
    from daemon.app import App

MAX_BACKOFF = 60.0
FILE_BATCH = 100


def run(app: App, *, once: bool = False) -> None:
    scheduler = schedule.Scheduler()
    scheduler.every(app.config.workflow.check_interval.total_seconds()).seconds.do(checks.run_checks, app)
    restore = _stop_on_signals(app.stop)
    log.event("daemon.started", once=once, mailbox=app.config.mailbox.backend, smtp=app.config.smtp.backend)
    failures = 0
    ready = False
    try:
        checks.run_checks(app)   # catch up after downtime before anything else
        while not app.stop.is_set():
            app.alive()   # /healthz: the loop is alive
            try:
                ingest_waiting(app)
                scheduler.run_pending()
                outbox.drain(app)
                failures = 0
            except MailboxError as exc:
                # The mailbox reconnects inside wait(), with its own backoff and log lines.
                log.warning("mailbox.unavailable", error=str(exc))
                app.mailbox.wait(min(MAX_BACKOFF, app.notifier.max_sleep() or MAX_BACKOFF), app.stop)
                continue
            except (peewee.OperationalError, peewee.InterfaceError) as exc:
                # The database is away: wait, then try again; nothing is lost meanwhile.
                failures += 1
                delay = min(MAX_BACKOFF, 2.0 ** failures) * random.uniform(0.5, 1.0)
                log.error("database.unavailable", error=f"{type(exc).__name__}: {exc}", retry_in=f"{delay:.1f}s")
                _drop_connection(app)
                app.stop.wait(delay)
                continue
            if once:
                break
            if not ready:  # systemd (Type=notify): up once the first pass is through
                app.notifier.ready()
                ready = True
            app.mailbox.wait(_wait_seconds(app, scheduler), app.stop)
    finally:
        app.notifier.stopping()
        restore()
        log.event("daemon.stopped")


def ingest_waiting(app: App) -> int:
    """Handle every waiting message; a failing one is retried, then quarantined.

    Handled messages are filed in batches (one IMAP MOVE per folder per batch), always
    after their commit: a crash in between only means they are seen again, as duplicates.
    """
    handled: list[tuple[str, Folder]] = []
    held: list[str] = []  # message locks, kept until the message is filed
    total = 0
    try:
        for item in app.mailbox.fetch():
            app.alive()
            if app.stop.is_set():
                break
            folder = attempts.process(app, item, held)
            if folder is not None:
                handled.append((item.key, folder))
            if len(handled) >= FILE_BATCH:
                total += _file(app, handled)
                _release(app, held)
        if handled:
            total += _file(app, handled)
    finally:
        _release(app, held)
    return total


def _release(app: App, held: list[str]) -> None:
    for name in held:
        unlock(app.db, name)
    held.clear()


def _file(app: App, handled: list[tuple[str, Folder]]) -> int:
    app.mailbox.file_many(handled)
    for key, folder in handled:
        log.event("message.filed", key=key, folder=folder.value)
    count = len(handled)
    handled.clear()
    return count


def _drop_connection(app: App) -> None:
    """A broken connection is closed, so the next query opens a fresh one (PostgreSQL restarts)."""
    try:
        app.db.close()
    except peewee.PeeweeException as exc:  # closing a dead connection can fail too; we are reconnecting anyway
        log.event("database.closed", error=str(exc))


def _wait_seconds(app: App, scheduler: schedule.Scheduler) -> float:
    wait = app.config.mailbox.poll_interval.total_seconds()
    if scheduler.idle_seconds is not None:
        wait = min(wait, max(0.0, scheduler.idle_seconds))
    watchdog = app.notifier.max_sleep()
    if watchdog is not None:
        wait = min(wait, watchdog)
    next_mail = outbox.next_due(app)
    if next_mail is not None:
        wait = min(wait, max(0.0, (next_mail - app.clock.now()).total_seconds()))
    return max(wait, 0.05)


def _stop_on_signals(stop: threading.Event) -> Any:
    """SIGTERM/SIGINT finish the message in hand, then stop; SIGHUP reopens the log file."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_stop(signum: int, frame: Any) -> None:
        log.event("daemon.stopping", signal=signal.Signals(signum).name)
        stop.set()

    def on_hup(signum: int, frame: Any) -> None:
        log.reopen()

    old = {s: signal.signal(s, h) for s, h in ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop),
                                                 (signal.SIGHUP, on_hup))}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)
    return restore

