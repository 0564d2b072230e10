"""Scheduled checks (issue 8, item 4): one `check` pass over 10^5 and 10^6 requests in SQLite.

The request table is filled with executemany in one transaction: 1 % pending requests
whose first reminder falls due a day after the start, 9 % open requests due much later,
90 % active or closed (nothing ever due). Timed, in-process with a FixedClock:
daemon.engine.checks.run_checks when nothing is due (it must be index-driven: the time should
barely grow from 10^5 to 10^6 rows), then, two days later, the pass that sends the 1 %
their reminder. Also printed: the SQL each pass ran and SQLite's plan for it.

    .venv/bin/python bench/checks.py                       # 100,000 and 1,000,000 requests
    .venv/bin/python bench/checks.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import Bench, SqlRecorder, header, median, note, table

UTC = dt.UTC
BASE = dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
CLOSED = ("expired", "declined", "cancelled", "lapsed", "rejected")
COLUMNS = ("state", "language", "partner_email", "account_name", "customer_email", "account_domain",
           "note_to_customer", "user_emails", "note_to_users", "created_at", "updated_at", "review_expires_at",
           "confirmed_at", "expires_at", "reminders_sent", "accepted_at", "closed_at", "due_at")


def _ts(value: dt.datetime | None) -> str | None:
    """As the model stores it: naive UTC text, which sorts."""
    return None if value is None else str(value.astimezone(UTC).replace(tzinfo=None))


def rows(n: int) -> Iterator[tuple[Any, ...]]:
    for i in range(n):
        k = i % 100
        domain = f"c{i:07d}.example"
        partner = f"partner{i % 50}@partner{i % 50}.example"
        created = BASE - dt.timedelta(days=8 + i % 200)
        review = confirmed = expires = accepted = closed = due = None
        if k == 0:                       # 1 %: pending, the first reminder due at BASE + 1 day
            state, created = "pending_acceptance", BASE - 8 * DAY
            confirmed = BASE - 6 * DAY
            expires, due = confirmed + 90 * DAY, confirmed + 7 * DAY
        elif k < 5:                      # 4 %: awaiting confirmation, lapses in 13 days
            state, created = "awaiting_confirmation", BASE - DAY
            review = due = created + 14 * DAY
        elif k < 10:                     # 5 %: pending, first reminder in 6 days
            state, confirmed = "pending_acceptance", BASE - DAY
            expires, due = confirmed + 90 * DAY, confirmed + 7 * DAY
        elif k < 40:                     # 30 %: active
            state, confirmed = "active", created + DAY
            expires, accepted = confirmed + 90 * DAY, confirmed + 2 * DAY
        else:                            # 60 %: closed one way or another
            state, closed = CLOSED[i % len(CLOSED)], created + 3 * DAY
        yield (state, "en" if i % 3 else "de", partner, f"Account {i}", f"carla@{domain}", domain,
               "Please accept soon.", f'["dev1@{domain}", "dev2@{domain}"]', "Licences are under Inventory.",
               _ts(created), _ts(created), _ts(review), _ts(confirmed), _ts(expires), 0, _ts(accepted),
               _ts(closed), _ts(due))


def make_database(path: Path, n: int) -> float:
    from models.db import open_database

    open_database(f"sqlite:///{path}").close()            # the real schema, migrations and all
    started = time.perf_counter()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=wal")
        sql = f"INSERT INTO request ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        db.executemany(sql, rows(n))
    with sqlite3.connect(path) as db:
        db.execute("ANALYZE")                           # what a long-lived database would have
    return time.perf_counter() - started


def build_app(root: Path, db_path: Path) -> Any:
    from daemon import log
    from daemon.app import build
    from daemon.clock import FixedClock
    from daemon.config import from_dict

    cfg = from_dict({
        "mailbox": {"backend": "maildir", "path": "inbox"},
        "smtp": {"backend": "maildir", "path": "outbox"},
        "database": {"url": f"sqlite:///{db_path}"},
        "workflow": {"partner_domains": ["partner.example"]},
    }, base=root, environ={})
    log.setup("INFO", "text", str(root / "smartacct.log"))
    return build(cfg, clock=FixedClock(BASE))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=5, help="'nothing due' passes per size; median reported")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    header("Scheduled checks: one pass over many requests (SQLite)", sizes=args.sizes, repeat=args.repeat)

    from models.request import Request

    results = []
    plans: dict[str, str] = {}
    due_sql: SqlRecorder | None = None
    with Bench("checks", keep=args.keep) as bench:
        for n in args.sizes:
            root = bench.path(f"n{n}")
            db_path = root / "smartacct.db"
            note(f"{n:,} requests: filling the database")
            fill = make_database(db_path, n)
            app = build_app(root, db_path)
            expected = len(range(0, n, 100))
            assert Request.select().where(Request.due_at <= BASE).count() == 0
            assert Request.select().where(Request.due_at <= BASE + 2 * DAY).count() == expected

            note(f"{n:,} requests: {args.repeat} passes with nothing due")
            idle = []
            sql = SqlRecorder(app.db)
            for _ in range(args.repeat):
                with sql:
                    started = time.perf_counter()
                    acted = app.checks.run()
                    idle.append(time.perf_counter() - started)
                assert acted == 0, acted
            for text, plan in sql.explain(lambda q: '"request"' in q and q.lstrip().startswith("SELECT")):
                plans.setdefault("nothing due: " + text, plan)

            note(f"{n:,} requests: two days later, {expected:,} reminders due")
            app.clock.advance(2 * DAY)  # type: ignore[attr-defined]
            due_sql = SqlRecorder(app.db)
            with due_sql:
                started = time.perf_counter()
                acted = app.checks.run()
                busy = time.perf_counter() - started
            if acted != expected:
                raise RuntimeError(f"{acted} requests acted on, expected {expected}")
            for text, plan in due_sql.explain(lambda q: '"request"' in q and q.lstrip().startswith("SELECT")):
                plans.setdefault("1 % due: " + text, plan)
            queued = app.db.execute_sql("SELECT count(*) FROM outbox WHERE kind = 'reminder'").fetchone()[0]
            assert queued == expected, queued
            size_mb = db_path.stat().st_size / 1e6 + (root / "smartacct.db-wal").stat().st_size / 1e6 \
                if (root / "smartacct.db-wal").exists() else db_path.stat().st_size / 1e6
            results.append((n, fill, size_mb, median(idle), min(idle), busy, acted, 1000 * busy / acted,
                            due_sql.statements / acted))
            app.close()

    print(table(["requests", "fill s", "DB MB", "nothing due: median ms", "min ms", "1 % due: s", "acted",
                 "ms per reminder", "SQL per reminder"],
                [(n, f, mb, 1000 * i, 1000 * m, b, a, per, q) for n, f, mb, i, m, b, a, per, q in results],
                "One check pass"))
    if len(results) >= 2:
        small, large = results[0], results[-1]
        grow = large[0] / small[0]
        print(f"\nnothing due: {large[0]:,} / {small[0]:,} rows = {large[3] / small[3]:.2f} x the time "
              f"(rows grew {grow:.0f} x; index-driven means near 1)")
        print(f"1 % due: {large[7] / small[7]:.2f} x the time per reminder ({large[6]:,} against {small[6]:,} "
              f"reminders; near 1 means the cost is per due request, not per row)")
    if due_sql is not None:
        print(table(["SQL during the 1 % pass (largest size)", "per reminder", "ms per reminder"],
                    due_sql.rows(per=results[-1][6]), "Statements per reminder"))
    for text, plan in plans.items():
        print(f"\nplan of `{text}`:\n```\n{plan}\n```")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
