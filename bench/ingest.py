"""Ingest throughput (issue 8, item 1): `smartacct run --once` against fetching the same mail raw.

N request emails (each for a domain of its own) wait in a private Dovecot's INBOX. Timed:
`smartacct run --once` as a subprocess (IMAP in, SQLite, SMTP out to a relay in its own
process) fetching, parsing, validating, storing, filing all N and sending the N reviews.
Baseline in the same run, on the same messages: imapclient logging in and fetching them
raw (BODY.PEEK[], 250 per FETCH), no processing. Also measured: an empty pass (startup
cost) and what filing alone costs (MOVE one message at a time against one MOVE per 250).

    .venv/bin/python bench/ingest.py                 # N = 1,000
    .venv/bin/python bench/ingest.py --n 1000 10000  # both sizes of the issue
    .venv/bin/python bench/ingest.py --profile py-spy  # plus a profile of a 1,000-message pass
"""

from __future__ import annotations

import argparse
import shutil
import time
from typing import Any

from common import (
    run,
    PASSWORD,
    PASSWORD_ENV,
    SHARED,
    Bench,
    Finished,
    Install,
    Pass,
    SqlRecorder,
    count,
    header,
    imap,
    imap_backends,
    partner_cap,
    ingest_pass,
    median,
    note,
    prepare_inbox,
    raw_fetch,
    request_messages,
    show_profile,
    table,
    verify_ingest,
)

MOVE_SAMPLE = 500


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1000], help="messages per run (default 1000)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="smartacct passes per N, each on a fresh mailbox and database; median reported")
    ap.add_argument("--raw-repeat", type=int, default=3, help="raw fetches per N; median reported")
    ap.add_argument("--relay", choices=("sink", "lmtp"), default="sink",
                    help="sink: the relay only counts the reviews (default); lmtp: it delivers them to Dovecot")
    ap.add_argument("--profile", choices=("none", "cprofile", "pyinstrument", "py-spy"), default="none",
                    help="also profile one extra pass over --profile-n messages")
    ap.add_argument("--profile-n", type=int, default=1000)
    ap.add_argument("--sql", type=int, default=200, metavar="N",
                    help="also run one pass in-process over N messages, recording every SQL statement (0: off)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, databases)")
    args = ap.parse_args()
    if args.profile == "py-spy" and not shutil.which("py-spy"):
        ap.error("py-spy is not on PATH (pip install py-spy)")

    header("Ingest: smartacct run --once vs raw IMAP fetch", n=args.n, repeat=args.repeat,
           raw_repeat=args.raw_repeat, relay=args.relay, database="SQLite")
    partners = [f"partner{i}@partner{i}.example" for i in range(50)]
    users = [SHARED, "empty@example.com", "profile@example.com", "sql@example.com"]
    users += [f"in{n}-{r}@example.com" for n in args.n for r in range(args.repeat)]
    users += [f"move{k}-{n}@example.com" for n in args.n for k in ("1", "b")]
    results = []
    cpu_rows: list[tuple[str, float, str]] = []
    with Bench("ingest", keep=args.keep) as bench:
        dovecot = bench.dovecot(users + (partners if args.relay == "lmtp" else []))
        relay = bench.relay(dovecot if args.relay == "lmtp" else None)

        note("startup: one pass over an empty INBOX")
        empty = ingest_pass(bench, dovecot, relay, "empty@example.com").finished.seconds

        for n in args.n:
            note(f"N={n}: writing the messages")
            raws = request_messages(n, tag=f"n{n}-")
            raw_times, runs = [], []
            for r in range(args.repeat):
                user = f"in{n}-{r}@example.com"
                prepare_inbox(dovecot, user, raws)
                for _ in range(args.raw_repeat):
                    got, _size, seconds = raw_fetch(dovecot, user)
                    assert got == n, f"raw fetch saw {got} of {n}"
                    raw_times.append(seconds)
                note(f"N={n}: smartacct run --once, pass {r + 1}/{args.repeat}")
                before = relay.received()
                p = ingest_pass(bench, dovecot, relay, user, hourly_cap=partner_cap(n))
                note(verify_ingest(p, dovecot, user, relay, n, before))
                runs.append(p.finished.seconds)
                cpu_rows, busy = p.cpu, p.busy
            raw_s, smart_s = median(raw_times), median(runs)
            results.append((n, n / raw_s, n / smart_s, (n / smart_s) / (n / raw_s), smart_s, raw_s,
                            n / max(smart_s - empty, 1e-9)))

        note(f"filing alone: MOVE {MOVE_SAMPLE} messages one at a time vs 250 per MOVE, out of an INBOX of N")
        moves = []
        for n in args.n:
            inbox = request_messages(n, tag=f"mv{n}-")
            one = _move_rate(dovecot, f"move1-{n}@example.com", inbox, per=1)
            batched = _move_rate(dovecot, f"moveb-{n}@example.com", inbox, per=250)
            moves.append((n, one, 1000 / one, batched, 1000 / batched))

        if args.sql:
            note(f"SQL: one pass in-process over {args.sql} messages")
            sql_rows, statements, commits = _sql_pass(bench, dovecot, relay, args.sql)

        if args.profile != "none":
            note(f"profile: one more pass over {args.profile_n} messages under {args.profile}")
            prepare_inbox(dovecot, "profile@example.com", request_messages(args.profile_n, tag="prof-"))
            out = bench.root / f"ingest.{args.profile}"
            before = relay.received()
            p = ingest_pass(bench, dovecot, relay, "profile@example.com", profiler=args.profile, profile_out=out)
            note(verify_ingest(p, dovecot, "profile@example.com", relay, args.profile_n, before))
            profile_seconds = p.finished.seconds

        print(table(["N", "raw fetch msg/s", "smartacct msg/s", "ratio", "smartacct s", "raw fetch s",
                     "smartacct msg/s net of startup"],
                    [(n, raw, smart, f"{ratio:.4f}", s, rs, net) for n, raw, smart, ratio, s, rs, net in results],
                    "Ingest throughput against a raw IMAP fetch of the same messages (the honest floor is bench/floor.py)"))
        print(f"\nstartup: `smartacct run --once` over an empty INBOX takes {empty:.2f} s (included above).")
        print(f"reviews sent to an SMTP relay that {'delivers to Dovecot over LMTP' if args.relay == 'lmtp' else 'only accepts (sink)'}; "
              "medians of " + f"{args.repeat} smartacct pass(es) and {args.raw_repeat * args.repeat} raw fetches per N.")
        print(table(["program", "CPU s", "of one core"], cpu_rows,
                    f"CPU by program during the last smartacct pass (N={args.n[-1]}; machine busy {100 * busy:.0f} %)"))
        print(table(["messages in INBOX", "MOVE 1 per command: msg/s", "ms per message",
                     "MOVE 250 per command: msg/s", "ms per message"], moves,
                    f"Filing alone: the first {MOVE_SAMPLE} messages of an INBOX of N moved to Processed with imapclient "
                    "(smartacct moves each filing batch, up to 100, in one command)"))
        if args.sql:
            print(table(["SQL statement (in-process pass, SQLite)", "per message", "ms per message"], sql_rows,
                        f"SQL per ingested message: {statements / args.sql:.1f} statements and "
                        f"{commits / args.sql:.1f} commits (attempt row, effects, each outbox row)"))
        if args.profile != "none":
            print(f"\nprofiled pass: {args.profile_n} messages in {profile_seconds:.1f} s under {args.profile} "
                  f"({args.profile_n / profile_seconds:.0f} msg/s)")
            show_profile(args.profile, out)
    return 0


def _sql_pass(bench: Bench, dovecot: Any, relay: Any, n: int) -> tuple[list[Any], int, int]:
    """`run --once` in this process (daemon.engine.loop.run), every statement and commit counted."""
    from daemon import config, log
    from daemon.engine import loop
    from daemon.app import build

    user = "sql@example.com"
    prepare_inbox(dovecot, user, request_messages(n, tag="sql-"))
    inst = Install(bench.path("install"), imap_backends(dovecot, user, relay))
    cfg = config.load(inst.config, environ={PASSWORD_ENV: PASSWORD})
    log.setup("INFO", "text", str(inst.log_file))
    app = build(cfg)
    commits = 0
    real_commit = app.db.commit

    def counting_commit(*a: Any, **kw: Any) -> Any:
        nonlocal commits
        commits += 1
        return real_commit(*a, **kw)

    app.db.commit = counting_commit  # type: ignore[method-assign]
    before = relay.received()
    try:
        with SqlRecorder(app.db) as sql:
            app.loop.run(once=True)
    finally:
        app.close()
    note(verify_ingest(Pass(inst, Finished(0, 0, 0)), dovecot, user, relay, n, before))
    return sql.rows(per=n, limit=15), sql.statements, commits


def _move_rate(dovecot, user: str, raws: list[bytes], per: int) -> float:  # type: ignore[no-untyped-def]
    """Messages per second moving the first MOVE_SAMPLE UIDs, `per` UIDs per UID MOVE."""
    prepare_inbox(dovecot, user, raws)
    with imap(dovecot, user) as client:
        client.create_folder("Processed")
        client.select_folder("INBOX")
        uids = sorted(client.search("ALL"))[:MOVE_SAMPLE]
        started = time.perf_counter()
        for start in range(0, len(uids), per):
            client.move(uids[start:start + per], "Processed")
        seconds = time.perf_counter() - started
    assert count(dovecot, user) == len(raws) - len(uids)
    return len(uids) / seconds


if __name__ == "__main__":
    run(main)
