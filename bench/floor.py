"""The floor (issue 16, goal 1): CPU per request of smartacct against a bare script doing the same job.

The floor is what the libraries smartacct must use cost when called directly on the same
request, with none of the daemon's guarantees: mail-parser parses the raw request (the one
bench/ingest.py sends), one row is committed to SQLite (WAL, the pragmas of models/db.py,
BEGIN IMMEDIATE), Jinja2 renders the review's text and HTML templates (templates/, the same
Environment options), and the stdlib email package composes and serialises the two-part
reply the plain way (EmailMessage, policy.SMTP, set_content + add_alternative, as_bytes).

smartacct is measured as the issue measures it: `smartacct run --once` over N requests
waiting in a Maildir, SQLite, the maildir outbox; CPU (user + system, from wait4) net of an
empty pass. The floor runs as a child process too and is measured the same way, net of its
own empty pass (imports, templates, database). Both alternate, `--repeat` times; medians.

    .venv/bin/python bench/floor.py                 # N = 1,000, 3 repetitions
    .venv/bin/python bench/floor.py --n 2000 --repeat 5
    .venv/bin/python bench/floor.py run --inbox DIR --db FILE --report OUT.json   # the floor alone
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import re
import secrets
import sqlite3
import sys
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FROM = "Smart Accounts <smart-accounts@example.com>"
TARGET = 0.8

# --------------------------------------------------------------------------- the floor itself

_LABELS = {"Account Name": "account_name", "Customer Email": "customer_email", "Account Domain": "account_domain",
           "Note to Customer": "note_to_customer", "User Emails": "user_emails",
           "Note to Added Users": "note_to_users", "Language": "language"}
_FIELD = re.compile(r"^(" + "|".join(map(re.escape, _LABELS)) + r"):[ \t]*(.*)$", re.MULTILINE)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
PHASES = ("parse", "render", "compose", "sqlite")


class Floor:
    """One request after another: parse, render, compose, one committed row. No checks, no log."""

    def __init__(self, db_path: Path) -> None:
        import jinja2

        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(REPO / "templates")), undefined=jinja2.StrictUndefined,
            autoescape=lambda name: bool(name and name.endswith(".html.j2")), trim_blocks=True,
            lstrip_blocks=True, auto_reload=False, cache_size=-1)
        self.env.filters["date"] = lambda d: f"{d.day} {_MONTHS[d.month - 1]} {d.year}"
        self.text = self.env.get_template("en/review.txt.j2")
        self.html = self.env.get_template("en/review.html.j2")
        self.db = sqlite3.connect(db_path, isolation_level=None)
        for pragma in ("journal_mode = wal", "synchronous = normal", "foreign_keys = 1", "busy_timeout = 30000"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("""CREATE TABLE IF NOT EXISTS request (
            id INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL, partner_email TEXT NOT NULL,
            account_name TEXT NOT NULL, customer_email TEXT NOT NULL, account_domain TEXT NOT NULL,
            note_to_customer TEXT NOT NULL, user_emails TEXT NOT NULL, note_to_users TEXT NOT NULL,
            message_id TEXT, created_at TEXT NOT NULL, review_expires_at TEXT NOT NULL, reply BLOB NOT NULL)""")
        self.count = 0
        self.phases = dict.fromkeys(PHASES, 0.0)

    def handle(self, raw: bytes) -> bytes:
        import mailparser
        from email import policy
        from email.message import EmailMessage
        from email.utils import format_datetime

        clock = time.process_time
        t0 = clock()
        parsed = mailparser.parse_from_bytes(raw)
        text_in = "\n".join(parsed.text_plain)
        fields = {_LABELS[m.group(1)]: m.group(2).strip() for m in _FIELD.finditer(text_in)}
        partner = parsed.from_[0][1]
        their_id = parsed.message_id
        t1 = clock()

        now = dt.datetime.now(dt.timezone.utc)
        self.count += 1
        ref = f"SA-{self.count:06d}"
        token = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
        reply_to = f"smart-accounts+{token}@example.com"
        request = SimpleNamespace(**{
            **dict.fromkeys(_LABELS.values(), ""), **fields, "language": fields.get("language") or "en",
            "review_expires_at": now + dt.timedelta(days=14),
            "user_emails": [u.strip() for u in fields.get("user_emails", "").split(",") if u.strip()]})
        decisions = []
        for word in ("CONFIRM", "CANCEL"):
            subject = f"{word} [{ref}]"
            query = urllib.parse.urlencode({"subject": subject, "body": f"{word}\r\n\r\nRef: {ref} · Code: {token}\r\n"},
                                           quote_via=urllib.parse.quote)
            decisions.append(SimpleNamespace(keyword=word, word=word, address=reply_to, subject=subject,
                                             href=f"mailto:{reply_to}?{query}"))
        values = {"lang": "en", "ref": ref, "request": request, "token": token, "from_addr": "smart-accounts@example.com",
                  "reply_address": reply_to, "decisions": decisions}
        module = self.text.make_module(values)
        subject = " ".join(str(module.subject).split())
        text, html = str(module), self.html.render(values, subject=subject)
        t2 = clock()

        msg = EmailMessage(policy=policy.SMTP)
        msg["From"] = FROM
        msg["To"] = partner
        msg["Subject"] = subject
        msg["Date"] = format_datetime(now)
        msg["Message-ID"] = f"<{secrets.token_hex(16)}@example.com>"
        msg["In-Reply-To"] = their_id
        msg["References"] = their_id
        msg["Reply-To"] = reply_to
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        out = msg.as_bytes()
        t3 = clock()

        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(
            "INSERT INTO request (state, partner_email, account_name, customer_email, account_domain, "
            "note_to_customer, user_emails, note_to_users, message_id, created_at, review_expires_at, reply) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("awaiting_confirmation", partner, request.account_name, request.customer_email, request.account_domain,
             request.note_to_customer, json.dumps(request.user_emails), request.note_to_users, their_id,
             now.isoformat(), request.review_expires_at.isoformat(), out))
        self.db.execute("COMMIT")
        t4 = clock()
        for name, took in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.phases[name] += took
        return out


def floor_main(argv: list[str]) -> int:
    """The floor as a child process: every file in INBOX/new, then one JSON line on stdout."""
    ap = argparse.ArgumentParser(prog="floor.py run")
    ap.add_argument("--inbox", type=Path, required=True)
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--report", type=Path, required=True)
    args = ap.parse_args(argv)
    floor = Floor(args.db)
    names = sorted(os.listdir(args.inbox / "new"))
    started = time.process_time()
    for name in names:
        floor.handle((args.inbox / "new" / name).read_bytes())
    loop = time.process_time() - started
    rows = floor.db.execute("SELECT count(*) FROM request").fetchone()[0]
    args.report.write_text(json.dumps({"n": len(names), "rows": rows, "loop_cpu": loop, "phases": floor.phases}))
    return 0


# --------------------------------------------------------------------------- the comparison


def maildir_backends(partners: int, n: int) -> str:
    cap = max(20, -(-n // partners))            # the default cap, raised so no review waits an hour
    return ('[mailbox]\nbackend = "maildir"\npath = "inbox"\n'
            '[smtp]\nbackend = "maildir"\npath = "outbox"\n'
            f'from_address = "{FROM}"\n'
            f'[workflow]\npartner_domains = ["*"]\nmax_emails_per_address_per_hour = {cap}\n')


def fill(inbox: Path, raws: list[bytes]) -> None:
    for sub in ("new", "cur", "tmp"):
        (inbox / sub).mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    for i, raw in enumerate(raws):
        data = raw.replace(b"\r\n", b"\n")          # as a local delivery agent stores it
        name = f"{now}.M{i:06d}P{os.getpid()}.bench"
        (inbox / "tmp" / name).write_bytes(data)
        os.rename(inbox / "tmp" / name, inbox / "new" / name)


def smartacct_pass(bench: Any, raws: list[bytes], n_for_cap: int) -> tuple[float, float]:
    """(CPU s, wall s) of `smartacct run --once` over `raws` on a fresh install; checks it did the job."""
    from common import Install, run_child

    inst = Install(bench.path("install"), maildir_backends(50, n_for_cap))
    fill(inst.root / "inbox", raws)
    finished = run_child(bench, inst.command("run", "--once"), cwd=inst.root, env=inst.env())
    n = len(raws)
    if n:
        problems = []
        requests = inst.scalar("SELECT count(*) FROM request WHERE state = 'awaiting_confirmation'")
        sent = inst.scalar("SELECT count(*) FROM outbox WHERE kind = 'review' AND state = 'sent'")
        files = len(os.listdir(inst.root / "outbox" / "new"))
        left = len(os.listdir(inst.root / "inbox" / "new")) + len(os.listdir(inst.root / "inbox" / "cur"))
        filed = len(os.listdir(inst.root / "inbox" / ".Processed" / "cur"))
        for what, got in (("requests", requests), ("reviews sent", sent), ("outgoing files", files),
                          ("filed in Processed", filed)):
            if got != n:
                problems.append(f"{got} {what}")
        if left:
            problems.append(f"{left} left in the inbox")
        if problems:
            raise RuntimeError(f"smartacct over {n} requests: " + ", ".join(problems) + f"\n{inst.log()[-2000:]}")
    return finished.cpu, finished.seconds


def floor_pass(bench: Any, raws: list[bytes]) -> tuple[float, float, dict[str, Any]]:
    """(CPU s from wait4, wall s, the child's own report) of the floor over `raws` in a fresh directory."""
    from common import PYTHON, run_child

    root = bench.path("floor")
    fill(root / "inbox", raws)
    report_path = root / "report.json"
    finished = run_child(bench, [PYTHON, __file__, "run", "--inbox", str(root / "inbox"), "--db",
                                 str(root / "floor.db"), "--report", str(report_path)],
                         cwd=root, env=dict(os.environ))
    report = json.loads(report_path.read_text())
    if report["rows"] != len(raws):
        raise RuntimeError(f"the floor committed {report['rows']} rows for {len(raws)} requests")
    return finished.cpu, finished.seconds, report


def main() -> int:
    from common import Bench, header, median, note, request_messages, table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="requests per pass (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="passes of each, alternating; medians reported")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    header("Ingest CPU per request: smartacct run --once (Maildir + SQLite) vs the floor", n=args.n,
           repeat=args.repeat, database="SQLite", mailbox="maildir", outbox="maildir")
    raws = request_messages(args.n, tag="floor-")
    smart, smart_empty, flo, flo_empty, loop_cpu = [], [], [], [], []
    phases: dict[str, list[float]] = {p: [] for p in PHASES}
    walls: dict[str, list[float]] = {"smartacct": [], "floor": []}
    with Bench("floor", keep=args.keep) as bench:
        for r in range(args.repeat):
            note(f"repetition {r + 1}/{args.repeat}: empty passes")
            smart_empty.append(smartacct_pass(bench, [], args.n)[0])
            flo_empty.append(floor_pass(bench, [])[0])
            note(f"repetition {r + 1}/{args.repeat}: smartacct run --once over {args.n}")
            cpu, wall = smartacct_pass(bench, raws, args.n)
            smart.append(cpu)
            walls["smartacct"].append(wall)
            note(f"repetition {r + 1}/{args.repeat}: the floor over {args.n}")
            cpu, wall, report = floor_pass(bench, raws)
            flo.append(cpu)
            walls["floor"].append(wall)
            loop_cpu.append(report["loop_cpu"])
            for p in PHASES:
                phases[p].append(report["phases"][p])
    n = args.n
    s_net = (median(smart) - median(smart_empty)) / n
    f_net = (median(flo) - median(flo_empty)) / n
    rows = [
        ("smartacct run --once", 1000 * s_net, median(smart), median(smart_empty), median(walls["smartacct"])),
        ("floor (bare libraries)", 1000 * f_net, median(flo), median(flo_empty), median(walls["floor"])),
    ]
    print(table(["program", "CPU ms per request (net)", "CPU s, N requests", "CPU s, empty pass", "wall s"], rows,
                f"CPU per request over {n} requests, medians of {args.repeat} (target: floor/smartacct >= {TARGET})"))
    print(f"\n**ratio floor/smartacct: {f_net / s_net:.2f}**  (floor {1000 * f_net:.2f} ms, smartacct "
          f"{1000 * s_net:.2f} ms per request; each net of its own empty pass)")
    loop = median(loop_cpu) / n
    print(table(["floor phase (in-loop process_time)", "ms per request", "share"],
                [(p, 1000 * median(phases[p]) / n, f"{100 * median(phases[p]) / n / loop:.0f} %") for p in PHASES]
                + [("whole loop", 1000 * loop, "100 %")],
                "Where the floor's time goes"))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        sys.exit(floor_main(sys.argv[2:]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
