"""`smartacct [-c CONFIG] COMMAND` (DESIGN §6). The only place errors become exit codes."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import peewee

from daemon import config as config_mod
from daemon import log
from daemon.app import App, build
from daemon.clock import OffsetClock, SystemClock
from daemon.errors import ConfigError, SmartacctError, os_reason
from daemon.ops.sdnotify import Notifier

EXIT_CONFIG = 2


PRIVATE = 0o077    # what the daemon writes (database, log, Maildirs) is its user's alone (DESIGN §4)


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(PRIVATE)
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        cfg = _load_config(args.config)
    except ConfigError as exc:
        print(f"smartacct: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        log.setup(cfg.logging.level, cfg.logging.format, cfg.logging.file)
    except OSError as exc:
        print(f"smartacct: cannot write the log file {cfg.logging.file}: {os_reason(exc, cfg.logging.file)} "
              "(logging.file must name a file this user can write)", file=sys.stderr)
        return 1
    try:
        return int(args.func(cfg, args) or 0)
    except ConfigError as exc:
        print(f"smartacct: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SmartacctError as exc:
        print(f"smartacct: {exc}", file=sys.stderr)
        return 1
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        print(f"smartacct: the database is busy or unreachable ({exc}); try again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _load_config(option: str | None) -> config_mod.Config:
    """-c, then $SMARTACCT_CONFIG, then ./config.toml; with none of them, the embedded default."""
    if option:
        return config_mod.load(Path(option))
    if os.environ.get("SMARTACCT_CONFIG"):
        return config_mod.load(Path(os.environ["SMARTACCT_CONFIG"]))
    local = Path("config.toml")
    return config_mod.load(local if local.exists() else None)


@contextlib.contextmanager
def _opened(cfg: config_mod.Config) -> Iterator[App]:
    """The App for one command, closed (mailbox, database) however the command ends."""
    # SMARTACCT_CLOCK_OFFSET ("90d") lets a test run the real daemon in the future; never set in production.
    offset = os.environ.get("SMARTACCT_CLOCK_OFFSET")
    clock = OffsetClock(config_mod.parse_duration(offset)) if offset else SystemClock()
    app = build(cfg, clock=clock, notifier=Notifier(os.environ))
    try:
        yield app
    finally:
        app.close()


# --- commands ----------------------------------------------------------------------------------

def cmd_run(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from daemon.ops import metrics

    with _opened(cfg) as app:
        server = None if args.once else metrics.serve(app)   # [metrics] listen: /metrics and /healthz
        try:
            app.loop.run(once=args.once, mailbox=cfg.mailbox.backend, smtp=cfg.smtp.backend)
        finally:
            if server is not None:
                server.close()
    return 0


def cmd_process(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    """Handle .eml files as if they had arrived; the files stay where they are."""
    from daemon.mail.mailbox import InboxMessage

    status = 0
    with _opened(cfg) as app:
        for name in args.files:
            path = Path(name)
            try:
                raw = path.read_bytes()
            except OSError as exc:
                print(f"smartacct: cannot read {name}: {exc.strerror}", file=sys.stderr)
                status = 1
                continue
            item = InboxMessage(key=path.name, raw=raw, size=len(raw))
            folder = app.attempts.process(item)
            print(f"{name}: {folder.value if folder else 'left for a later pass (another instance has it, or it kept racing)'}")
        app.outbox.drain()
    return status


def cmd_check(cfg: config_mod.Config, args: argparse.Namespace) -> int:

    with _opened(cfg) as app:
        acted = app.checks.run()
        app.outbox.drain()
        print(f"{acted} request(s) acted on")
    return 0


def cmd_requests_list(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from models.request import Request

    with _opened(cfg):  # binds the models to the database
        query = Request.select().order_by(Request.id.desc())
        if args.state:
            query = query.where(Request.state == args.state)
        rows = [_request_json(r) for r in query]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for r in rows:
            print(f"{r['ref']}  {r['state']:<22} {r['account_domain']:<30} {r['customer_email']:<32} {r['created_at']}")
    return 0


def cmd_requests_show(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from models.event import Event
    from models.outbox import OutboxRow
    from models.request import Request, parse_ref

    with _opened(cfg):  # binds the models to the database
        req_id = parse_ref(args.ref)
        req = Request.get_or_none(Request.id == req_id) if req_id else None
        if req is None:
            print(f"smartacct: no request {args.ref}", file=sys.stderr)
            return 1
        data = _request_json(req)
        data["events"] = [{"at": _iso(e.at), "name": e.name, **e.detail}
                          for e in Event.select().where(Event.request_id == req.id).order_by(Event.id)]
        data["emails"] = [{"id": o.id, "kind": o.kind, "to": o.recipient, "state": o.state, "attempts": o.attempts,
                           "created_at": _iso(o.created_at), "sent_at": _iso(o.sent_at), "last_error": o.last_error}
                          for o in OutboxRow.select().where(OutboxRow.request_id == req.id).order_by(OutboxRow.id)]
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
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


def cmd_template(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from daemon.mail.render import Renderer

    print(Renderer(cfg.smtp.from_address).blank_form(args.lang), end="")
    return 0


def cmd_config_check(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    """The file has loaded (or we would not be here); now try each connection."""
    from daemon.app import make_mailbox, make_transport
    from daemon.mail.maildir import check_inbox
    from models.db import open_database

    def mailbox() -> None:
        if cfg.mailbox.backend == "maildir":
            check_inbox(cfg.mailbox.path)   # building the mailbox would create its folders
        else:
            _check(make_mailbox(cfg))

    ok = True
    checks: list[tuple[str, Any]] = [
        ("database", lambda: open_database(cfg.database.url).close()),
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
    return 0 if ok else 1


def _check(backend: Any) -> None:
    check = getattr(backend, "check", None)
    if check is not None:
        check()
    close = getattr(backend, "close", None)
    if close is not None:
        close()


def cmd_requests_cancel(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from daemon.ops import admin

    with _opened(cfg) as app:
        req = admin.cancel_request(app, args.ref, args.reason or "")
        print(f"{req.ref}: cancelled; the partner{' and the customer' if req.confirmed_at else ''} told")
    return 0


def cmd_outbox_list(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from daemon.ops import admin

    with _opened(cfg):  # binds the models to the database
        rows = admin.outbox_rows(args.state)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for r in rows:
        when = r["sent_at"] or r["next_try_at"] or r["created_at"]
        error = f"  {r['last_error']}" if r["last_error"] else ""
        print(f"#{r['id']:<6} {r['ref'] or '-':<10} {r['kind']:<24} {r['recipient']:<32} {r['state']:<7} "
              f"attempts={r['attempts']:<3} {when}{error}")
    return 0


def cmd_outbox_retry(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from daemon.ops import admin

    with _opened(cfg) as app:
        results = admin.retry_emails(app, args.ids)
    return _report(results, "queued again; the daemon sends it on its next pass")


def cmd_quarantine_list(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from daemon.ops import admin

    with _opened(cfg):  # binds the models to the database
        rows = admin.quarantined()
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for r in rows:
        print(f"#{r['id']:<6} {r['quarantined_at']}  {r['sender'] or '-':<32} attempts={r['attempts']}  "
              f"{r['subject'][:60]!r}  key={r['key']}\n        {r['last_error'] or ''}")
    return 0


def cmd_quarantine_retry(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from daemon.ops import admin

    with _opened(cfg) as app:
        results = admin.retry_quarantined(app, args.ids)
    return _report(results, "back in the inbox; the daemon handles it afresh on its next pass")


def _report(results: Any, done: str) -> int:
    """One line per id; exit status 1 when any of them could not be retried."""
    status = 0
    for r in results:
        if r.problem is None:
            print(f"#{r.id}: {done}")
        else:
            print(f"smartacct: {r.problem}", file=sys.stderr)
            status = 1
    return status


# --- helpers -----------------------------------------------------------------------------------

def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _request_json(r: Any) -> dict[str, Any]:
    return {
        "ref": r.ref, "state": r.state, "account_name": r.account_name, "account_domain": r.account_domain,
        "customer_email": r.customer_email, "partner_email": r.partner_email, "user_emails": r.user_emails,
        "note_to_customer": r.note_to_customer, "note_to_users": r.note_to_users, "language": r.language,
        "created_at": _iso(r.created_at), "review_expires_at": _iso(r.review_expires_at),
        "confirmed_at": _iso(r.confirmed_at), "expires_at": _iso(r.expires_at), "accepted_at": _iso(r.accepted_at),
        "closed_at": _iso(r.closed_at), "reminders_sent": r.reminders_sent,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smartacct", description="Smart Account requests by email.")
    p.add_argument("-c", "--config", help="config file (default: $SMARTACCT_CONFIG, then ./config.toml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the daemon: ingest, scheduled checks, outbox")
    run.add_argument("--once", action="store_true", help="one full pass, then exit")
    run.set_defaults(func=cmd_run)

    process = sub.add_parser("process", help="handle .eml files as if they had arrived")
    process.add_argument("files", nargs="+", metavar="FILE")
    process.set_defaults(func=cmd_process)

    check = sub.add_parser("check", help="run the scheduled checks once")
    check.set_defaults(func=cmd_check)

    requests = sub.add_parser("requests", help="inspect and cancel requests").add_subparsers(dest="sub", required=True)
    lst = requests.add_parser("list", help="requests, newest first")
    lst.add_argument("--state")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_requests_list)
    show = requests.add_parser("show", help="one request with its timeline")
    show.add_argument("ref")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_requests_show)

    cancel = requests.add_parser("cancel", help="cancel an open request; the parties are told")
    cancel.add_argument("ref")
    cancel.add_argument("--reason", help="told to the partner (and the customer)")
    cancel.set_defaults(func=cmd_requests_cancel)

    outbox = sub.add_parser("outbox", help="outgoing emails").add_subparsers(dest="sub", required=True)
    out_list = outbox.add_parser("list", help="queued, sent and failed emails, newest first")
    out_list.add_argument("--state", choices=("queued", "sent", "failed"))
    out_list.add_argument("--json", action="store_true")
    out_list.set_defaults(func=cmd_outbox_list)
    out_retry = outbox.add_parser("retry", help="put failed emails back in the queue")
    out_retry.add_argument("ids", nargs="+", type=int, metavar="ID")
    out_retry.set_defaults(func=cmd_outbox_retry)

    quarantine = sub.add_parser("quarantine", help="messages that failed processing").add_subparsers(
        dest="sub", required=True)
    q_list = quarantine.add_parser("list", help="quarantined messages, newest first")
    q_list.add_argument("--json", action="store_true")
    q_list.set_defaults(func=cmd_quarantine_list)
    q_retry = quarantine.add_parser("retry", help="move messages back into the inbox to be handled afresh")
    q_retry.add_argument("ids", nargs="+", type=int, metavar="ID")
    q_retry.set_defaults(func=cmd_quarantine_retry)

    template = sub.add_parser("template", help="print the blank request form")
    template.add_argument("--lang", choices=("en", "de"), default="en")
    template.set_defaults(func=cmd_template)

    cfg = sub.add_parser("config", help="configuration").add_subparsers(dest="sub", required=True)
    cfg_check = cfg.add_parser("check", help="validate the configuration and try each connection")
    cfg_check.set_defaults(func=cmd_config_check)
    return p


if __name__ == "__main__":
    sys.exit(main())
