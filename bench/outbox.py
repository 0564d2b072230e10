"""Outbox (issue 8, item 3): draining N queued emails over SMTP against plain smtplib.

An App is built in-process (daemon.app.build) on SQLite with the smtp backend pointing at
an SMTP relay that runs in a process of its own. N review emails are queued the way the
daemon queues them (a Request row, then Effects.send: rendered once, stored with its
Message-ID). Timed: Outbox.drain() sending them all. Baseline in the same run:
smtplib sending the same N stored messages over one connection to the same relay. Both
are measured against a relay that only accepts (sink: what smartacct itself costs; the
figure the target is about) and one that delivers every message into Dovecot over LMTP
(what a slow server does to both). Rows are put back to `queued` between repetitions.

    .venv/bin/python bench/outbox.py              # 1,000 emails, 3 repetitions
    .venv/bin/python bench/outbox.py --n 5000 --repeat 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import smtplib
import time
from pathlib import Path
from typing import Any

from common import SHARED, run, Bench, SqlRecorder, header, median, note, table, top_lines

TARGET = 0.8


def build_app(root: Path, relay: Any) -> Any:
    from daemon import log
    from daemon.app import build
    from daemon.config import from_dict

    cfg = from_dict({
        "mailbox": {"backend": "maildir", "path": "inbox"},
        "smtp": {"backend": "smtp", "host": relay.host, "port": relay.port, "security": "none",
                 "from_address": f"Smart Accounts <{SHARED}>"},
        "database": {"url": "sqlite:///smartacct.db"},
        "workflow": {"partner_domains": ["partner.example"]},
    }, base=root, environ={})
    log.setup("INFO", "text", str(root / "smartacct.log"))   # as the daemon logs: one line per email
    return build(cfg)


def queue_reviews(app: Any, n: int) -> None:
    from daemon.core.workflow import new_request_changes, review_mails
    from models.request import Request

    now = app.clock.now()
    with app.db.atomic():
        for i in range(n):
            partner = f"partner{i % 50}@partner{i % 50}.example"
            domain = f"o{i:06d}.example"
            req = Request.create(partner_email=partner, language="en", account_name=f"Outbox {i}",
                                 customer_email=f"carla@{domain}", account_domain=domain,
                                 note_to_customer="Please accept soon.", note_to_users="",
                                 user_emails_json=f'["dev1@{domain}", "dev2@{domain}"]',
                                 **new_request_changes(now, app.config.workflow))
            applier = app.store.applier(now=now)
            for mail in review_mails(partner):
                applier.send(mail, req)


def requeue(app: Any) -> None:
    from models.outbox import OutboxRow, OutboxState

    past = app.clock.now() - dt.timedelta(seconds=1)
    OutboxRow.update(state=OutboxState.queued.value, attempts=0, sent_at=None, last_error=None,
                     next_try_at=past, leased_by=None).execute()


def stored(app: Any) -> list[tuple[str, bytes]]:
    from models.outbox import OutboxRow

    return [(r.recipient, bytes(r.body)) for r in OutboxRow.select().order_by(OutboxRow.id)]


def smtplib_send(relay: Any, sender: str, messages: list[tuple[str, bytes]]) -> float:
    started = time.perf_counter()
    with smtplib.SMTP(relay.host, relay.port, timeout=120) as smtp:
        for rcpt, raw in messages:
            smtp.sendmail(sender, [rcpt], raw)
    return time.perf_counter() - started


def drain(app: Any, n: int, sql: SqlRecorder | None = None) -> float:
    from daemon.engine import outbox

    requeue(app)
    started = time.perf_counter()
    if sql is not None:
        with sql:
            result = app.outbox.drain()
    else:
        result = app.outbox.drain()
    seconds = time.perf_counter() - started
    if result.sent != n:
        raise RuntimeError(f"drain sent {result.sent} of {n} (retried {result.retried}, failed {result.failed})")
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="queued emails (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per relay; medians reported")
    ap.add_argument("--profile", action="store_true", help="also cProfile one more drain (sink relay)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    header("Outbox: daemon.engine.outbox.drain vs smtplib over one connection", n=args.n, repeat=args.repeat,
           database="SQLite", relay="own process")
    partners = [f"partner{i}@partner{i}.example" for i in range(50)]
    rows = []
    with Bench("outbox", keep=args.keep) as bench:
        dovecot = bench.dovecot(partners)
        relays = {"sink (accepts only)": bench.relay(None), "LMTP into Dovecot": bench.relay(dovecot)}
        root = bench.path("app")
        app = build_app(root, relays["sink (accepts only)"])
        note(f"queueing {args.n} review emails")
        started = time.perf_counter()
        queue_reviews(app, args.n)
        queue_seconds = time.perf_counter() - started
        messages = stored(app)
        sender = app.renderer.from_addr
        for name, relay in relays.items():
            app.close()
            app = build_app(root, relay)
            if name.startswith("sink"):
                sql = SqlRecorder(app.db)
            smart, plain = [], []
            for r in range(args.repeat):
                note(f"{name}: repetition {r + 1}/{args.repeat}")
                before = relay.received()
                if r % 2:
                    plain.append(smtplib_send(relay, sender, messages))
                    smart.append(drain(app, args.n, sql if name.startswith("sink") and r == 0 else None))
                else:
                    smart.append(drain(app, args.n, sql if name.startswith("sink") and r == 0 else None))
                    plain.append(smtplib_send(relay, sender, messages))
                got = relay.received() - before
                if got != 2 * args.n:
                    raise RuntimeError(f"{name}: the relay got {got} messages, expected {2 * args.n}")
            s, p = median(smart), median(plain)
            rows.append((name, args.n / p, args.n / s, f"{p / s:.2f}", s, p))
            if name.startswith("sink"):
                explained = sql.explain(lambda q: q.lstrip().upper().startswith("SELECT"))
                if args.profile:
                    import cProfile
                    import pstats

                    prof = cProfile.Profile()
                    prof.enable()
                    drain(app, args.n)
                    prof.disable()
                    profile = pstats.Stats(prof)
        app.close()

    print(table(["relay", "smtplib msg/s", "drain msg/s", "ratio drain/smtplib", "drain s", "smtplib s"], rows,
                f"Outbox drain of {args.n} emails (target: ratio >= {TARGET} against the sink relay)"))
    print(f"\nThe sink row is the one the target is about: it isolates smartacct's own cost. Queueing the "
          f"{args.n} emails (render + rows, one transaction) took {queue_seconds:.1f} s, not included.")
    print(table(["SQL during one drain (sink)", "per email", "ms per email"], sql.rows(per=args.n),
                f"SQL statements per email sent ({sql.statements / args.n:.1f} in all, plus one BEGIN/COMMIT)"))
    for text, plan in explained:
        print(f"\nplan of `{text}`:\n```\n{plan}\n```")
    if args.profile:
        print(f"\n### cProfile of one drain (sink), top 25 by cumulative time\n\n```\n"
              f"{top_lines(profile, 'cumulative', 25)}\n```")
    return 0


if __name__ == "__main__":
    run(main)
