"""build(config) -> App: everything the daemon and the CLI work with, made in one place."""

from __future__ import annotations

import importlib.metadata
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from functools import cached_property

import peewee

from daemon.clock import Clock, SystemClock
from daemon.config import Config, public_url
from daemon.engine.apply import Store
from daemon.engine.attempts import Attempts
from daemon.engine.checks import Checks
from daemon.engine.ingest import Ingest
from daemon.engine.isolate import MESSAGE_BUDGET, Isolation
from daemon.engine.loop import Loop
from daemon.engine.outbox import Outbox
from daemon.mail.mailbox import Mailbox
from models.message import Folder
from daemon.ops.counters import Metrics
from daemon.mail.render import Renderer
from daemon.ops.sdnotify import Notifier
from daemon.mail.transport import Transport
from models.db import open_database


@dataclass
class App:
    config: Config
    clock: Clock
    db: peewee.Database
    renderer: Renderer
    stop: threading.Event = field(default_factory=threading.Event)
    metrics: Metrics = field(default_factory=Metrics)
    notifier: Notifier = field(default_factory=lambda: Notifier({}))
    instance: str = field(default_factory=lambda: instance_id())   # who holds a message (daemon.engine.attempts)
    budget: float = MESSAGE_BUDGET                                  # CPU seconds per message (daemon.engine.isolate)
    _mailbox: Mailbox | None = None
    _transport: Transport | None = None

    @property
    def mailbox(self) -> Mailbox:
        """Opened on first use, so `requests list` never touches the mail server."""
        if self._mailbox is None:
            self._mailbox = make_mailbox(self.config)
        return self._mailbox

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = make_transport(self.config)
        return self._transport

    @property
    def mailbox_if_open(self) -> Mailbox | None:
        """The mailbox if made already, else None: /healthz and /metrics look, never connect."""
        return self._mailbox

    @property
    def transport_if_open(self) -> Transport | None:
        return self._transport

    def alive(self) -> None:
        """The loop shows life: for /healthz and for the systemd watchdog."""
        self.metrics.tick()
        self.notifier.alive()

    # --- the services, each given what it uses ------------------------------------------------

    @cached_property
    def store(self) -> Store:
        return Store(self.db, self.clock, self.renderer, self.config.workflow)

    @cached_property
    def ingest(self) -> Ingest:
        return Ingest(self.store, self.config.mailbox.max_message_size, self.metrics)

    @cached_property
    def attempts(self) -> Attempts:
        return Attempts(self.store, self.ingest, Isolation(self.config, self.clock, self.budget), self.instance,
                        self.budget, self.config.mailbox.max_attempts, self.metrics)

    @cached_property
    def checks(self) -> Checks:
        return Checks(self.store, self.metrics, self.alive, self.stop)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.store, self.transport, self.config.smtp.give_up_after,
                      self.config.workflow.max_emails_per_address_per_hour, self.metrics, self.alive, self.stop,
                      self.instance)

    @cached_property
    def loop(self) -> Loop:
        return Loop(self.mailbox, self.attempts, self.checks, self.outbox, self.db, self.clock, self.notifier,
                    self.alive, self.stop, int(self.config.workflow.check_interval.total_seconds()),
                    self.config.mailbox.poll_interval.total_seconds(), self.renderer.precompile,
                    started=startup(self.config))

    def close(self) -> None:
        if self._mailbox is not None:
            self._mailbox.close()
        self.db.close()


def build(config: Config, *, clock: Clock | None = None, notifier: Notifier | None = None,
          budget: float = MESSAGE_BUDGET, create: bool = True) -> App:
    """create=False: a database that does not exist yet is refused, not made (the admin commands)."""
    db = open_database(config.database.url, create=create)
    return App(config=config, clock=clock or SystemClock(), db=db, renderer=Renderer(config.smtp.from_address),
               notifier=notifier or Notifier({}), budget=budget)


def version() -> str:
    try:
        return importlib.metadata.version("smartacct")
    except importlib.metadata.PackageNotFoundError:   # run from a source tree that was never installed
        return "unknown"


def startup(config: Config) -> dict[str, str]:
    """What `daemon.started` names (DESIGN §7): the version, the config file and where the mailbox,
    the outbox and the database are; never a password."""
    mb, smtp = config.mailbox, config.smtp
    mailbox = f"imap://{mb.username}@{mb.host}:{mb.effective_port}/{mb.folder}" if mb.backend == "imap" \
        else str(mb.path)
    outbox = f"smtp://{smtp.host}:{smtp.effective_port}" if smtp.backend == "smtp" else str(smtp.path)
    return {"version": version(), "config": str(config.source) if config.source else "embedded default",
            "mailbox": mailbox, "outbox": outbox, "database": public_url(config.database.url)}


def instance_id() -> str:
    """This process, distinguishable from every earlier one: host, pid and a random part."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(6)}"


def folder_names(config: Config) -> dict[Folder, str]:
    mb = config.mailbox
    return {Folder.processed: mb.processed_folder, Folder.rejected: mb.rejected_folder,
            Folder.quarantine: mb.quarantine_folder}


def make_mailbox(config: Config) -> Mailbox:
    mb = config.mailbox
    if mb.backend == "imap":
        from daemon.mail.imap import ImapMailbox
        from models.cursor import DbCursor

        return ImapMailbox(mb, DbCursor(f"{mb.username}@{mb.host}:{mb.effective_port}/{mb.folder}"))
    from daemon.mail.maildir import MaildirMailbox

    return MaildirMailbox(mb.path, folder_names(config), max_message_size=mb.max_message_size)


def make_transport(config: Config) -> Transport:
    if config.smtp.backend == "smtp":
        from daemon.mail.smtp import SmtpTransport

        return SmtpTransport(config.smtp)
    from daemon.mail.maildir import MaildirTransport

    return MaildirTransport(config.smtp.path)
