"""`smartacct [-c CONFIG] COMMAND` on Click (DESIGN §6). The only place errors become exit codes.

A command is a small function: it takes the Session (the clock, and where the config comes
from), opens the App with `session.opened()` when it needs one, prints, and returns its exit
status. A new command is one more function under its group, with `@config_option` and
`@pass_session`, like the ones below.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import click
import peewee

from daemon import config as config_mod
from daemon import log
from daemon.app import App, build
from daemon.clock import Clock, SystemClock
from daemon.errors import AdminError, ConfigError, LogFileError, MailboxError, NotCreated, SmartacctError, os_reason
from daemon.ops import tables
from daemon.ops.sdnotify import Notifier
from daemon.ops.tables import Column
from models.db import sqlite_path
from models.state import State

PRIVATE = 0o077          # what the daemon writes (database, log, Maildirs) is its user's alone (DESIGN §4)
EXIT_FAILED = 1          # a command failed; SmartacctError subclasses carry their own status
EXIT_INTERRUPTED = 130   # Ctrl-C, as a shell reports it (128 + SIGINT)
LEFT = "left for a later pass (another instance has it, or it kept racing)"   # `process`, a message not filed

F = TypeVar("F", bound=Callable[..., Any])


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run one command line and return its exit status; every error becomes a status here."""
    os.umask(PRIVATE)
    session = Session(clock or SystemClock())
    try:
        try:
            with smartacct.make_context("smartacct", list(sys.argv[1:] if argv is None else argv),
                                        obj=session) as ctx:
                status = int(smartacct.invoke(ctx) or 0)
        except click.exceptions.Exit as exc:          # --help, --version
            status = exc.exit_code
        except click.ClickException as exc:           # usage errors (2), printed as Click prints them
            exc.show()
            status = exc.exit_code
        except ConfigError as exc:                    # one line naming the key (DESIGN §6)
            _say(f"config error: {exc}")
            status = exc.exit_code
        except SmartacctError as exc:
            _say(str(exc))
            status = exc.exit_code
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            _say(f"the database is busy or unreachable ({exc}); try again")
            status = EXIT_FAILED
        except KeyboardInterrupt:
            status = EXIT_INTERRUPTED
        sys.stdout.flush()    # a pipe closed early shows here at the latest, inside the catcher
    except BrokenPipeError:
        # `smartacct requests list | head -1`: the reader has gone. Python's advice: point stdout
        # at /dev/null, so the flush at exit finds nothing to fail on, and end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        status = EXIT_FAILED
    return status


def _say(message: str) -> None:
    print(f"smartacct: {message}", file=sys.stderr)


# --- what every command shares ---------------------------------------------------------------------

@dataclass
class Session:
    """One command line: the clock its App runs on, and the config file it names (-c may come
    before or after the command; the last one given counts)."""

    clock: Clock = field(default_factory=SystemClock)
    config_file: str | None = None
    _config: config_mod.Config | None = None

    @property
    def config(self) -> config_mod.Config:
        """Loaded at the command's first need, once; the log is set up as it says."""
        if self._config is None:
            cfg = self.unlogged_config()
            try:
                log.setup(cfg.logging.level, cfg.logging.format, cfg.logging.file)
            except OSError as exc:
                raise LogFileError(f"cannot write the log file {cfg.logging.file}: "
                                   f"{os_reason(exc, cfg.logging.file)} "
                                   "(logging.file must name a file this user can write)") from None
            self._config = cfg
        return self._config

    def unlogged_config(self) -> config_mod.Config:
        """The config without setting up its log file: `config check` creates nothing."""
        return self._config or config_mod.load(self.config_path)

    @property
    def config_path(self) -> Path | None:
        """The file the config comes from: -c, then $SMARTACCT_CONFIG, then ./config.toml;
        None for the embedded default."""
        if self.config_file:
            return Path(self.config_file)
        if os.environ.get("SMARTACCT_CONFIG"):
            return Path(os.environ["SMARTACCT_CONFIG"])
        local = Path("config.toml")
        return local if local.exists() else None

    def config_named(self) -> str:
        path = self.config_path
        return f"the config {path.resolve()}" if path else "the embedded default config (no config file)"

    @contextlib.contextmanager
    def opened(self, create: bool = False) -> Iterator[App]:
        """The App for one command (the models bound to its database), closed however the command ends.

        Only `run` and `process` (create=True) make a database or an inbox Maildir that does not
        exist yet; the other commands refuse, naming the path: run in the wrong folder or with
        the wrong -c, they must not start an empty installation of their own (issue 15).
        """
        if not create:   # refused before the log file is set up, so nothing at all is made
            cfg = self.unlogged_config()
            path = sqlite_path(cfg.database.url)
            if path is not None and path != ":memory:" and not Path(path).is_file():
                raise NotCreated(f"the database {path} does not exist yet (`smartacct run` creates it); "
                                 f"database.url in {self.config_named()}")
            if cfg.mailbox.backend == "maildir" and not cfg.mailbox.path.is_dir():
                raise MailboxError(f"the inbox Maildir {cfg.mailbox.path} does not exist yet (`smartacct run` "
                                   f"creates it); mailbox.path in {self.config_named()}")
        try:
            app = build(self.config, clock=self.clock, notifier=Notifier(os.environ), create=create)
        except NotCreated as exc:
            raise NotCreated(f"{exc}; database.url in {self.config_named()}") from None
        try:
            yield app
        finally:
            app.close()


def _remember_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Session).config_file = value


def config_option(f: F) -> F:
    """-c/--config on the program and on every group and command, so it may stand anywhere."""
    return click.option(
        "-c", "--config", metavar="FILE", expose_value=False, callback=_remember_config,
        help="The config file. Default: $SMARTACCT_CONFIG, then ./config.toml, then the embedded default.",
    )(f)


pass_session = click.make_pass_decorator(Session, ensure=True)


class Commands(click.Group):
    """Lists its commands in the order they are defined (DESIGN §6), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def group(parent: click.Group, name: str) -> Callable[[Callable[..., Any]], click.Group]:
    """A group of commands under `parent`; called bare, it lists them."""
    def decorate(f: Callable[..., Any]) -> click.Group:
        return parent.group(name, cls=Commands, no_args_is_help=True)(config_option(f))
    return decorate


@click.group("smartacct", cls=Commands, context_settings=CONTEXT, no_args_is_help=True,
             epilog="Exit status: 0 done; 1 the command failed, and says why; "
                    "2 a usage or configuration error.")
@config_option
@click.version_option(package_name="smartacct", prog_name="smartacct", message="%(prog)s %(version)s")
def smartacct() -> None:
    """Run the "request a Smart Account" process by email.

    Partners email a filled-in request form; smartacct checks it, asks the partner to confirm,
    invites the customer, reminds and expires on schedule, and answers every reply. `run` is the
    daemon; the other commands look at and repair its work, also while it runs.

    The config comes from -c FILE (before or after the command), else $SMARTACCT_CONFIG, else
    ./config.toml, else the embedded demo default (Maildirs and SQLite under ./var).
    """


# --- the daemon ------------------------------------------------------------------------------------

@smartacct.command(short_help="The daemon: mail in, scheduled checks, mail out.")
@click.option("--once", is_flag=True,
              help="One full pass (ingest all waiting mail, run due checks, drain the outbox), then exit.")
@config_option
@pass_session
def run(session: Session, once: bool) -> int:
    """Run the daemon: read new mail, run the scheduled checks, send the outbox.

    It waits for mail with IMAP IDLE (polling as a fallback) until SIGTERM or SIGINT, and
    finishes the message in hand before it stops; SIGHUP reopens the log file after logrotate.
    Under systemd, use Type=notify. With --once it makes one pass and exits: for cron, or to
    catch up by hand.
    """
    from daemon.ops import metrics

    with session.opened(create=True) as app:
        server = None if once else metrics.serve(app)   # [metrics] listen: /metrics and /healthz
        try:
            app.loop.run(once=once)
        finally:
            if server is not None:
                server.close()
    return 0


@smartacct.command(short_help="Handle .eml files as if they had arrived.")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@config_option
@pass_session
def process(session: Session, files: tuple[str, ...]) -> int:
    """Handle .eml files as if they had arrived in the inbox.

    For a message saved from a mail client, or to try a request form without a mail server.
    The files stay where they are; each line names the folder the message was filed as, and
    the emails it causes are sent at once.
    """
    from daemon.mail.mailbox import InboxMessage

    status = 0
    with session.opened(create=True) as app:
        for name in files:
            path = Path(name)
            try:
                raw = path.read_bytes()
            except OSError as exc:
                _say(f"cannot read {name}: {exc.strerror}")
                status = EXIT_FAILED
                continue
            item = InboxMessage(key=path.name, raw=raw, size=len(raw))
            folder = app.attempts.process(item)
            print(f"{name}: {folder.value if folder else LEFT}")
        app.outbox.drain()
    return status


@smartacct.command(short_help="Run the scheduled checks once: reminders, expiry.")
@config_option
@pass_session
def check(session: Session) -> int:
    """Run the scheduled checks once: reminders, lapsed reviews, expired invitations.

    The daemon runs them every workflow.check_interval by itself; run this after a long
    downtime, or from cron where no daemon runs. The emails they cause are sent at once.
    """
    with session.opened() as app:
        acted = app.checks.run()
        app.outbox.drain()
        print(f"{acted} request(s) acted on")
    return 0


# --- arguments -------------------------------------------------------------------------------------

class RefType(click.ParamType[int]):
    """A request reference (DESIGN §1): a malformed one is a usage error (2), told apart from a
    well-formed one that names no request (1, said by the command)."""

    name = "REF"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from parsers.ref import parse_ref

        if isinstance(value, int):
            return value
        req_id = parse_ref(str(value))
        if req_id is None:
            self.fail(f"{str(value)[:60]!r} is not a request reference: SA- and six or more digits, "
                      "e.g. SA-000042", param, ctx)
        return req_id


class SinceType(click.ParamType[dt.timedelta]):
    """How far back, as a config duration: 30d, 12h, 2w."""

    name = "DURATION"
    LONGEST = dt.timedelta(days=365 * 100)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            delta = config_mod.parse_duration(str(value)[:40])
        except (ValueError, OverflowError):
            delta = None
        if delta is None or delta > self.LONGEST:
            self.fail(f"{str(value)[:40]!r} is not a duration like 30d, 12h, 45m or 2w", param, ctx)
        return delta


STATES = [s.value for s in State]


# --- requests --------------------------------------------------------------------------------------

@group(smartacct, "requests")
def requests() -> None:
    """Look at requests and cancel them.

    A request is named by its reference (SA-000042), which is in the subject of every email
    about it.
    """


REQUEST_COLUMNS = (
    Column("REF", "ref", 14), Column("STATE", "state", 21), Column("ACCOUNT", "account_name", 28),
    Column("DOMAIN", "account_domain", 28), Column("CUSTOMER", "customer_email", 32),
    Column("PARTNER", "partner_email", 32), Column("CREATED", "created_at", 20),
)


@requests.command("list", short_help="Requests, newest first, by state.")
@click.option("--state", type=click.Choice(STATES), metavar="STATE",
              help=f"Only requests in this state: {', '.join(STATES)}.")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON array with every field of each request, for scripts.")
@config_option
@pass_session
def requests_list(session: Session, state: str | None, as_json: bool) -> int:
    """List requests, newest first: reference, state, account name and domain, customer, partner
    and when it came in. Long values are cut with "…"; --json has them whole."""
    from models.request import Request

    with session.opened():  # binds the models to the database
        query = Request.select().order_by(Request.id.desc())
        if state:
            query = query.where(Request.state == state)
        rows = [_request_json(r) for r in query]
    if as_json:
        return _print_json(rows)
    _print_table(REQUEST_COLUMNS, rows)
    return 0


EVENT_COLUMNS = (Column("AT", "at", 20), Column("EVENT", "name", 28), Column("DETAILS", "details", 200))
EMAIL_COLUMNS = (
    Column("ID", "id", 8, right=True), Column("KIND", "kind", 24), Column("TO", "to", 32),
    Column("STATE", "state", 7), Column("ATTEMPTS", "attempts", 8, right=True), Column("CREATED", "created_at", 20),
    Column("SENT", "sent_at", 20), Column("LAST ERROR", "last_error", 100),
)


@requests.command("show", short_help="One request with its timeline of events and emails.")
@click.argument("ref", type=RefType())
@click.option("--json", "as_json", is_flag=True, help="The request, its events and its emails as one JSON object.")
@config_option
@pass_session
def requests_show(session: Session, ref: int, as_json: bool) -> int:
    """Show one request, every field of it, with its timeline: every event, and every email with
    its state.

    REF is the reference, e.g. SA-000042. Use it to answer "what happened to my request?".
    """
    from daemon.clock import iso
    from models.event import Event
    from models.outbox import OutboxRow
    from models.request import Request
    from parsers.ref import format_ref

    with session.opened():  # binds the models to the database
        req = Request.get_or_none(Request.id == ref)
        if req is None:
            raise AdminError(f"no request {format_ref(ref)}")
        data = _request_json(req)
        data["events"] = [{"at": iso(e.at), "name": e.name, **e.detail}
                          for e in Event.select().where(Event.request_id == req.id).order_by(Event.id)]
        data["emails"] = [{"id": o.id, "kind": o.kind, "to": o.recipient, "state": o.state, "attempts": o.attempts,
                           "created_at": iso(o.created_at), "sent_at": iso(o.sent_at), "last_error": o.last_error}
                          for o in OutboxRow.select().where(OutboxRow.request_id == req.id).order_by(OutboxRow.id)]
    if as_json:
        return _print_json(data)
    fields = [k for k in data if k not in ("events", "emails")]
    width = max(len(k) for k in fields) + 2
    for key in fields:
        lines = _text(data[key]).split("\n")
        print(f"{key:<{width}}{lines[0]}")
        for more in lines[1:]:
            print(f"{'':<{width}}{more}")
    events = [{"at": e["at"], "name": e["name"],
               "details": " ".join(f"{k}={_text(v)}" for k, v in e.items() if k not in ("at", "name"))}
              for e in data["events"]]
    print("\ntimeline:")
    print(_indented(tables.render(EVENT_COLUMNS, events)), end="")
    print("\nemails:")
    print(_indented(tables.render(EMAIL_COLUMNS, data["emails"])), end="")
    return 0


@requests.command("cancel", short_help="Cancel an open request; the parties are told.")
@click.argument("ref", type=RefType())
@click.option("--reason", metavar="TEXT", help="Why, in a sentence: told to the partner (and the customer).")
@config_option
@pass_session
def requests_cancel(session: Session, ref: int, reason: str | None) -> int:
    """Cancel an open request as an admin, and tell the parties.

    Only a request awaiting confirmation or pending acceptance can be cancelled. The partner
    is told, and the customer too once invited, as when the partner replies CANCEL: for a
    request withdrawn by phone, or sent by mistake.
    """
    from daemon.ops import admin
    from parsers.ref import format_ref

    with session.opened() as app:
        req = admin.cancel_request(app, format_ref(ref), reason or "")
        print(f"{req.ref}: cancelled; the partner{' and the customer' if req.confirmed_at else ''} told")
    return 0


# --- outbox ----------------------------------------------------------------------------------------

@group(smartacct, "outbox")
def outbox() -> None:
    """Read outgoing emails, and queue failed ones again.

    Every email waits in the outbox until the relay accepts it. A temporary failure is retried
    with backoff; after smtp.give_up_after, or on a permanent refusal, the email is failed.
    """


@outbox.command("list", short_help="Outgoing emails: queued, sent, failed.")
@click.option("--state", type=click.Choice(("queued", "sent", "failed")), help="Only emails in this state.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of the emails with every field, for scripts.")
@config_option
@pass_session
def outbox_list(session: Session, state: str | None, as_json: bool) -> int:
    """List outgoing emails, newest first: id, request, kind, recipient, state, attempts, the
    last error and, with the Maildir backend, the file in smtp.path/new/ it became. Read one
    with `outbox show ID`."""
    from daemon.ops import admin

    with session.opened():  # binds the models to the database
        rows = admin.outbox_rows(state)
        maildir = session.config.smtp.backend == "maildir"
    if as_json:
        return _print_json(rows)
    columns = [Column("ID", "id", 8, right=True), Column("REF", "ref", 14), Column("KIND", "kind", 24),
               Column("RECIPIENT", "recipient", 32), Column("STATE", "state", 7),
               Column("ATTEMPTS", "attempts", 8, right=True), Column("CREATED", "created_at", 20)]
    if maildir:
        columns.append(Column("FILE", "file", 60))
    columns.append(Column("LAST ERROR", "last_error", 100))
    _print_table(columns, rows)
    return 0


@outbox.command("show", short_help="One outgoing email as a person reads it.")
@click.argument("email_id", type=int, metavar="ID")
@config_option
@pass_session
def outbox_show(session: Session, email_id: int) -> int:
    """Show one outgoing email as its recipient reads it: the headers, then the text part,
    decoded. The reply code is masked, in the headers and in the text: it is the recipient's
    secret, never the admin's. ID is the id `outbox list` shows."""
    from daemon.ops import admin

    with session.opened():  # binds the models to the database
        shown = admin.outbox_email(email_id)
    width = max(len(name) for name, _ in shown.headers) + 2
    for name, value in shown.headers:
        print(f"{name + ':':<{width}}{tables.printable(value)}")
    print()
    text = tables.printable(shown.text)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


@outbox.command("retry", short_help="Queue failed emails again, once the cause is fixed.")
@click.argument("ids", nargs=-1, required=True, type=int, metavar="ID...")
@config_option
@pass_session
def outbox_retry(session: Session, ids: tuple[int, ...]) -> int:
    """Queue failed emails again, by the ids `outbox list` shows.

    Once the cause is fixed (a full mailbox, a relay setting): the daemon sends them on its next
    pass, with a new smtp.give_up_after window.
    """
    from daemon.ops import admin

    with session.opened() as app:
        results = admin.retry_emails(app, ids)
    return _report(results, "queued again; the daemon sends it on its next pass")


# --- quarantine ------------------------------------------------------------------------------------

@group(smartacct, "quarantine")
def quarantine() -> None:
    """Look at messages that failed processing, and retry them.

    A message that fails mailbox.max_attempts times is filed in the quarantine folder, so that
    the mail behind it goes on; nothing in it is lost.
    """


QUARANTINE_COLUMNS = (
    Column("ID", "id", 8, right=True), Column("QUARANTINED", "quarantined_at", 20), Column("SENDER", "sender", 32),
    Column("ATTEMPTS", "attempts", 8, right=True), Column("SUBJECT", "subject", 40), Column("KEY", "key", 48),
    Column("LAST ERROR", "last_error", 100),
)


@quarantine.command("list", short_help="Messages that failed processing, and why.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of the messages, for scripts.")
@config_option
@pass_session
def quarantine_list(session: Session, as_json: bool) -> int:
    """List quarantined messages, newest first: id, when, sender, attempts, subject, the key in
    the mailbox and the last error."""
    from daemon.ops import admin

    with session.opened():  # binds the models to the database
        rows = admin.quarantined()
    if as_json:
        return _print_json(rows)
    _print_table(QUARANTINE_COLUMNS, rows)
    return 0


@quarantine.command("retry", short_help="Back into the inbox, to be handled afresh.")
@click.argument("ids", nargs=-1, required=True, type=int, metavar="ID...")
@config_option
@pass_session
def quarantine_retry(session: Session, ids: tuple[int, ...]) -> int:
    """Move quarantined messages back into the inbox, by the ids `quarantine list` shows.

    After the cause is fixed (a new release, a repaired database): the daemon handles each one
    afresh on its next pass, its attempts counted from zero.
    """
    from daemon.ops import admin

    with session.opened() as app:
        results = admin.retry_quarantined(app, ids)
    return _report(results, "back in the inbox; the daemon handles it afresh on its next pass")


# --- the numbers -----------------------------------------------------------------------------------

@smartacct.command(short_help="The numbers: requests, acceptance, times to answer.")
@click.option("--since", type=SinceType(), metavar="DURATION",
              help="Only what happened in this window, e.g. 30d or 12h. Default: all time.")
@click.option("--json", "as_json", is_flag=True, help="The same figures as one JSON object, for scripts.")
@config_option
@pass_session
def stats(session: Session, since: dt.timedelta | None, as_json: bool) -> int:
    """Show the numbers: requests per state, the share the customers accept, how long partners
    take to confirm and customers to accept (median and 90th percentile), what expires or lapses
    in the next 7 days, queued and failed emails, and quarantined messages.

    With --since, each figure counts only what happened in that window (requests that came in,
    confirmations, acceptances and other outcomes, emails written, messages quarantined); what
    comes in the next 7 days and what waits now are always now.
    """
    from daemon.ops import stats as stats_mod

    with session.opened() as app:
        now = app.clock.now()
        figures = stats_mod.compute(app.db, now, now - since if since else None)
    if as_json:
        return _print_json(figures.as_json())
    print(_stats_text(figures, since), end="")
    return 0


def _stats_text(f: Any, since: dt.timedelta | None) -> str:
    from daemon.ops.stats import duration

    lines = [f"since {f.since} (the last {_text(_span(since))})" if since else "over all time",
             f"{'requests':<24}{f.requests_total}"]
    digits = len(str(f.requests_total))
    lines += [f"  {state:<22}{count:>{digits}}" for state, count in f.requests.items()]
    decided = f.accepted + f.declined + f.expired
    rate = f"{f.acceptance_rate * 100:.1f}%" if f.acceptance_rate is not None else "-"
    lines.append(f"{'acceptance rate':<24}{rate} ({f.accepted} accepted of {decided} decided or expired: "
                 f"{f.declined} declined, {f.expired} expired)")
    for label, t, what in (("time to confirm", f.time_to_confirm, "review email to the partner's confirmation"),
                           ("time to accept", f.time_to_accept, "activation email to the customer's acceptance")):
        lines.append(f"{label:<24}median {duration(t.median_seconds)}, 90th percentile {duration(t.p90_seconds)} "
                     f"({what}; {t.count} request{'' if t.count == 1 else 's'})")
    lines.append(f"{'next 7 days':<24}{f.expiring_next_7_days} expire, {f.lapsing_next_7_days} lapse")
    for u in f.soonest:
        lines.append(f"  {u.ref:<12}{u.event:<9}{u.at}  {tables.fit(tables.one_line(u.account_name), 40)} "
                     f"({u.account_domain})")
    more = f.expiring_next_7_days + f.lapsing_next_7_days - len(f.soonest)
    if more > 0:
        lines.append(f"  and {more} more (`smartacct requests list --state pending_acceptance`)")
    lines.append(f"{'emails':<24}" + ", ".join(f"{n} {state}" for state, n in f.emails.items()))
    lines.append(f"{'quarantined messages':<24}{f.quarantined}")
    return "\n".join(lines) + "\n"


def _span(since: dt.timedelta | None) -> str:
    from daemon.ops.stats import duration

    return duration(since.total_seconds()) if since is not None else ""


# --- setting up ------------------------------------------------------------------------------------

@smartacct.command(short_help="Print the blank request form for partners.")
@click.option("--lang", type=click.Choice(("en", "de")), default="en", show_default=True,
              help="The language of the form's labels.")
@config_option
@pass_session
def template(session: Session, lang: str) -> int:
    """Print the blank request form a partner fills in and emails to us.

    Hand it to new partners, or put it where they find it.
    """
    from daemon.mail.render import Renderer

    form = Renderer(session.config.smtp.from_address).blank_form(lang)
    print(form, end="" if form.endswith("\n") else "\n")
    return 0


@group(smartacct, "config")
def config() -> None:
    """Check the configuration before the daemon uses it."""


@config.command("check", short_help="Validate the config and try each connection.")
@config_option
@pass_session
def config_check(session: Session) -> int:
    """Validate the configuration, show what it resolves to, and try each connection.

    It names the config file it read (or the embedded default) and every path the daemon uses
    (mailbox, outbox, database, log), saying which do not exist yet; then database, mailbox and
    SMTP, one line each, ok or what failed in words. Exit status 1 if any failed. It reports and
    never creates: run it before the first start and after every change.
    """
    from daemon.ops import checkup

    cfg = session.unlogged_config()          # the log file is one of the paths it reports, not makes
    log.setup("ERROR", cfg.logging.format, "")
    path = session.config_path
    lines, ok = checkup.report(cfg, path.resolve() if path else None)
    for line in lines:
        print(tables.printable(line))
    return 0 if ok else EXIT_FAILED


# --- output ----------------------------------------------------------------------------------------

def _print_json(data: Any) -> int:
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def _print_table(columns: Sequence[Column], rows: Iterable[dict[str, Any]]) -> None:
    for line in tables.lines(columns, rows):
        print(line)


def _text(value: Any) -> str:
    """A value of --json as the text output shows it: lists as comma lists, none as "-"."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return tables.printable(str(value))


def _indented(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def _report(results: Iterable[Any], done: str) -> int:
    """One line per id; exit status 1 when any of them could not be retried."""
    status = 0
    for r in results:
        if r.problem is None:
            print(f"#{r.id}: {done}")
        else:
            _say(r.problem)
            status = EXIT_FAILED
    return status


def _request_json(r: Any) -> dict[str, Any]:
    from daemon.clock import iso

    return {
        "ref": r.ref, "state": r.state, "account_name": r.account_name, "account_domain": r.account_domain,
        "customer_email": r.customer_email, "partner_email": r.partner_email, "user_emails": r.user_emails,
        "note_to_customer": r.note_to_customer, "note_to_users": r.note_to_users, "language": r.language,
        "created_at": iso(r.created_at), "review_expires_at": iso(r.review_expires_at),
        "confirmed_at": iso(r.confirmed_at), "expires_at": iso(r.expires_at), "accepted_at": iso(r.accepted_at),
        "closed_at": iso(r.closed_at), "reminders_sent": r.reminders_sent,
    }


if __name__ == "__main__":
    sys.exit(main())
