"""`smartacct [-c CONFIG] COMMAND` on Click (DESIGN §6). The only place errors become exit codes.

A command is a small function: it takes the Session (the clock, and where the config comes
from), opens the App with `session.opened()` when it needs one, prints, and returns its exit
status. A new command is one more function under its group, with `@config_option` and
`@pass_session`, like the ones below.
"""

from __future__ import annotations

import contextlib
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
from daemon.errors import AdminError, ConfigError, LogFileError, SmartacctError, os_reason
from daemon.ops.sdnotify import Notifier

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
            cfg = _load_config(self.config_file)
            try:
                log.setup(cfg.logging.level, cfg.logging.format, cfg.logging.file)
            except OSError as exc:
                raise LogFileError(f"cannot write the log file {cfg.logging.file}: "
                                   f"{os_reason(exc, cfg.logging.file)} "
                                   "(logging.file must name a file this user can write)") from None
            self._config = cfg
        return self._config

    @contextlib.contextmanager
    def opened(self) -> Iterator[App]:
        """The App for one command (the models bound to its database), closed however the command ends."""
        app = build(self.config, clock=self.clock, notifier=Notifier(os.environ))
        try:
            yield app
        finally:
            app.close()


def _load_config(option: str | None) -> config_mod.Config:
    """-c, then $SMARTACCT_CONFIG, then ./config.toml; with none of them, the embedded default."""
    if option:
        return config_mod.load(Path(option))
    if os.environ.get("SMARTACCT_CONFIG"):
        return config_mod.load(Path(os.environ["SMARTACCT_CONFIG"]))
    local = Path("config.toml")
    return config_mod.load(local if local.exists() else None)


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

    with session.opened() as app:
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
    with session.opened() as app:
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


# --- requests --------------------------------------------------------------------------------------

@group(smartacct, "requests")
def requests() -> None:
    """Look at requests and cancel them.

    A request is named by its reference (SA-000042), which is in the subject of every email
    about it.
    """


@requests.command("list", short_help="Requests, newest first, by state.")
@click.option("--state", metavar="STATE", help="Only requests in this state, e.g. pending_acceptance.")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON array with every field of each request, for scripts.")
@config_option
@pass_session
def requests_list(session: Session, state: str | None, as_json: bool) -> int:
    """List requests, newest first: reference, state, account domain, customer, created."""
    from models.request import Request

    with session.opened():  # binds the models to the database
        query = Request.select().order_by(Request.id.desc())
        if state:
            query = query.where(Request.state == state)
        rows = [_request_json(r) for r in query]
    if as_json:
        return _print_json(rows)
    for r in rows:
        print(f"{r['ref']}  {r['state']:<22} {r['account_domain']:<30} {r['customer_email']:<32} {r['created_at']}")
    return 0


@requests.command("show", short_help="One request with its timeline of events and emails.")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="The request, its events and its emails as one JSON object.")
@config_option
@pass_session
def requests_show(session: Session, ref: str, as_json: bool) -> int:
    """Show one request with its timeline: every event, and every email with its state.

    REF is the reference, e.g. SA-000042. Use it to answer "what happened to my request?".
    """
    from daemon.ops.admin import iso
    from models.event import Event
    from models.outbox import OutboxRow
    from models.request import Request
    from parsers.ref import parse_ref

    with session.opened():  # binds the models to the database
        req_id = parse_ref(ref)
        req = Request.get_or_none(Request.id == req_id) if req_id else None
        if req is None:
            raise AdminError(f"no request {ref}")
        data = _request_json(req)
        data["events"] = [{"at": iso(e.at), "name": e.name, **e.detail}
                          for e in Event.select().where(Event.request_id == req.id).order_by(Event.id)]
        data["emails"] = [{"id": o.id, "kind": o.kind, "to": o.recipient, "state": o.state, "attempts": o.attempts,
                           "created_at": iso(o.created_at), "sent_at": iso(o.sent_at), "last_error": o.last_error}
                          for o in OutboxRow.select().where(OutboxRow.request_id == req.id).order_by(OutboxRow.id)]
    if as_json:
        return _print_json(data)
    for key in ("ref", "state", "account_name", "account_domain", "customer_email", "partner_email", "user_emails",
                "language", "created_at", "review_expires_at", "confirmed_at", "expires_at", "accepted_at", "closed_at"):
        print(f"{key:<18} {data[key] if data[key] is not None else '-'}")
    print("\ntimeline:")
    for e in data["events"]:
        rest = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("at", "name"))
        print(f"  {e['at']}  {e['name']:<22} {rest}")
    print("\nemails:")
    for o in data["emails"]:
        print(f"  #{o['id']:<6} {o['kind']:<24} {o['to']:<32} {o['state']:<7} attempts={o['attempts']}")
    return 0


@requests.command("cancel", short_help="Cancel an open request; the parties are told.")
@click.argument("ref")
@click.option("--reason", metavar="TEXT", help="Why, in a sentence: told to the partner (and the customer).")
@config_option
@pass_session
def requests_cancel(session: Session, ref: str, reason: str | None) -> int:
    """Cancel an open request as an admin, and tell the parties.

    Only a request awaiting confirmation or pending acceptance can be cancelled. The partner
    is told, and the customer too once invited, as when the partner replies CANCEL: for a
    request withdrawn by phone, or sent by mistake.
    """
    from daemon.ops import admin

    with session.opened() as app:
        req = admin.cancel_request(app, ref, reason or "")
        print(f"{req.ref}: cancelled; the partner{' and the customer' if req.confirmed_at else ''} told")
    return 0


# --- outbox ----------------------------------------------------------------------------------------

@group(smartacct, "outbox")
def outbox() -> None:
    """Look at outgoing emails, and queue failed ones again.

    Every email waits in the outbox until the relay accepts it. A temporary failure is retried
    with backoff; after smtp.give_up_after, or on a permanent refusal, the email is failed.
    """


@outbox.command("list", short_help="Outgoing emails: queued, sent, failed.")
@click.option("--state", type=click.Choice(("queued", "sent", "failed")), help="Only emails in this state.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of the emails, for scripts.")
@config_option
@pass_session
def outbox_list(session: Session, state: str | None, as_json: bool) -> int:
    """List outgoing emails, newest first, with their state, attempts and last error."""
    from daemon.ops import admin

    with session.opened():  # binds the models to the database
        rows = admin.outbox_rows(state)
    if as_json:
        return _print_json(rows)
    for r in rows:
        when = r["sent_at"] or r["next_try_at"] or r["created_at"]
        error = f"  {r['last_error']}" if r["last_error"] else ""
        print(f"#{r['id']:<6} {r['ref'] or '-':<10} {r['kind']:<24} {r['recipient']:<32} {r['state']:<7} "
              f"attempts={r['attempts']:<3} {when}{error}")
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


@quarantine.command("list", short_help="Messages that failed processing, and why.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of the messages, for scripts.")
@config_option
@pass_session
def quarantine_list(session: Session, as_json: bool) -> int:
    """List quarantined messages, newest first: sender, attempts, subject and the last error."""
    from daemon.ops import admin

    with session.opened():  # binds the models to the database
        rows = admin.quarantined()
    if as_json:
        return _print_json(rows)
    for r in rows:
        print(f"#{r['id']:<6} {r['quarantined_at']}  {r['sender'] or '-':<32} attempts={r['attempts']}  "
              f"{r['subject'][:60]!r}  key={r['key']}\n        {r['last_error'] or ''}")
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

    print(Renderer(session.config.smtp.from_address).blank_form(lang), end="")
    return 0


@group(smartacct, "config")
def config() -> None:
    """Check the configuration before the daemon uses it."""


@config.command("check", short_help="Validate the config and try each connection.")
@config_option
@pass_session
def config_check(session: Session) -> int:
    """Validate the configuration and try each connection: database, mailbox, SMTP.

    One line each, ok or what failed in words; exit status 1 if any failed. It reports and never
    creates: run it before the first start and after every change.
    """
    from daemon.app import make_mailbox, make_transport
    from daemon.mail.maildir import check_inbox
    from models.db import open_database

    cfg = session.config   # loaded (or we would not be here); now try each connection

    def database() -> None:
        open_database(cfg.database.url).close()

    def mailbox() -> None:
        if cfg.mailbox.backend == "maildir":
            check_inbox(cfg.mailbox.path)   # building the mailbox would create its folders
        else:
            _check(make_mailbox(cfg))

    ok = True
    checks: list[tuple[str, Callable[[], None]]] = [
        ("database", database),
        (f"mailbox ({cfg.mailbox.backend})", mailbox),
        (f"smtp ({cfg.smtp.backend})", lambda: _check(make_transport(cfg))),
    ]
    for name, attempt in checks:
        try:
            attempt()
        except SmartacctError as exc:
            ok = False
            print(f"{name}: FAILED: {exc}")
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            ok = False
            print(f"{name}: FAILED: the database is busy or unreachable: {exc}")
        except OSError as exc:
            ok = False
            print(f"{name}: FAILED: {os_reason(exc)}")
        except Exception as exc:  # config check reports anything, in plain words, and goes on
            ok = False
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}")
        else:
            print(f"{name}: ok")
    return 0 if ok else EXIT_FAILED


def _check(backend: Any) -> None:
    check = getattr(backend, "check", None)
    if check is not None:
        check()
    close = getattr(backend, "close", None)
    if close is not None:
        close()


# --- output ----------------------------------------------------------------------------------------

def _print_json(data: Any) -> int:
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


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
    from daemon.ops.admin import iso

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
