"""Scale (issue 8, item 6): ingest with 1, 2 and 4 instances on PostgreSQL, and SQLite against PostgreSQL.

The same N request emails wait in a fresh INBOX (private Dovecot) for each configuration;
each gets a fresh database. The instances are `smartacct run --once` subprocesses started
together on one config (one mailbox, one database); each claims a batch of messages (an
advisory lock per message, DESIGN §8) before it fetches their bodies, and fetches only those
it got. Timed: from the start until every instance has exited; then the INBOX must be
empty, N requests stored and N reviews at the SMTP relay (a sink in its own process). CPU
per program (smartacct, Dovecot, PostgreSQL, relay) is sampled from /proc over each run,
which is what says what limits it on this machine; the instances' own CPU comes from
wait4(), and CPU per message is printed against one instance's, net of an empty pass per
instance. Finally one PostgreSQL instance is profiled (py-spy when on PATH, else cProfile).

    .venv/bin/python bench/scale.py                     # N = 1,000
    .venv/bin/python bench/scale.py --n 2000 --instances 1 2 4 8 --profiler cprofile
"""

from __future__ import annotations

import argparse
import re
import shutil
import sqlite3
import time
from typing import Any

import psycopg
from common import (
    run,
    SHARED,
    Bench,
    CpuSampler,
    Install,
    Pass,
    header,
    imap,
    imap_backends,
    ingest_pass,
    note,
    prepare_inbox,
    request_messages,
    run_child,
    show_profile,
    table,
    verify_ingest,
)


def run_instances(bench: Bench, dovecot: Any, relay: Any, user: str, database_url: str | None,
                  instances: int, n: int
                  ) -> tuple[float, float, list[Install], list[tuple[str, float, str]], float, list[str], float]:
    """Start `instances` × `smartacct run --once` together.

    Returns the seconds until the job was done (INBOX empty, N requests stored, N reviews
    sent; polled every 0.25 s) and until the last instance exited, the installs, CPU rows,
    how busy the machine was, a line per instance that crashed, and the instances' CPU
    seconds from wait4() (each process whole, from start to exit).
    """
    import threading

    installs = [Install(bench.path(f"install-{instances}x-{i}"), imap_backends(dovecot, user, relay), database_url)
                for i in range(instances)]
    errors: list[BaseException] = []
    crashed: list[str] = []
    cpu_seconds: list[float] = []

    def one(inst: Install) -> None:
        try:
            finished = run_child(bench, inst.command("run", "--once"), cwd=inst.root, env=inst.env(), check=False)
            cpu_seconds.append(finished.cpu)
            if finished.returncode:
                last = [line for line in finished.stderr.splitlines() if line.strip()][-1:] or ["?"]
                crashed.append(f"exit {finished.returncode}: {last[0].strip()}")
                note(f"instance {inst.root.name} exited {finished.returncode}:\n{finished.stderr}")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread once the others finished
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(inst,)) for inst in installs]
    done: float | None = None
    with imap(dovecot, user) as watcher, CpuSampler(bench.roots) as cpu:
        started = time.perf_counter()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            if done is None:
                try:
                    stored, sent = installs[0].query(
                        "SELECT (SELECT count(*) FROM request), (SELECT count(*) FROM outbox WHERE state = 'sent')")[0]
                except (sqlite3.Error, psycopg.Error):   # the schema may not exist yet in the first instant
                    stored = sent = 0
                left = int(watcher.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"])
                if stored >= n and sent >= n and left == 0:
                    done = time.perf_counter() - started
                    at_done = cpu.snapshot()
            time.sleep(0.25)
        for t in threads:
            t.join()
        exited = time.perf_counter() - started
    if errors:
        raise errors[0]
    if done is None:
        done, at_done = exited, (cpu.rows(), cpu.machine_busy)
    rows, busy = at_done
    return done, exited, installs, rows, busy, crashed, sum(cpu_seconds)


def empty_pass_cpu(bench: Bench, dovecot: Any, relay: Any, user: str, database_url: str | None,
                   repeat: int = 3) -> float:
    """The median CPU seconds of one `run --once` over an empty INBOX: what an instance costs
    whatever the number of messages (start, imports, connections, schema check, exit)."""
    cpus = []
    for _ in range(repeat):
        inst = Install(bench.path("install-empty"), imap_backends(dovecot, user, relay), database_url)
        cpus.append(run_child(bench, inst.command("run", "--once"), cwd=inst.root, env=inst.env()).cpu)
    return sorted(cpus)[len(cpus) // 2]


def bodies_fetched(dovecot: Any, user: str, since: int) -> int:
    """Message bodies Dovecot sent to `user`'s sessions that logged out after log offset
    `since` (its logout line's body_count)."""
    log = dovecot.log[since:]
    return sum(int(m) for m in re.findall(rf"imap\({re.escape(user)}\).*? body_count=(\d+)", log))


def events(installs: list[Install], name: str) -> int:
    pattern = re.compile(rf" {re.escape(name)} ")
    return sum(len(pattern.findall(inst.log())) for inst in installs)


def cpu_table(results: list[tuple[str, int, float, float, int, dict[str, float]]], n: int) -> str:
    """CPU per message by instance count, against one instance on the same database in the same run."""
    def per_message(db: str, k: int, cpu: float, empty: float) -> tuple[float, float]:
        return 1000 * cpu / n, 1000 * (cpu - k * empty) / n

    one = {db: per_message(db, k, cpu, empty) for db, k, cpu, empty, *_ in results if k == 1}
    rows = []
    for db, k, cpu, empty, bodies, programs in results:
        gross, net = per_message(db, k, cpu, empty)
        server = programs.get("postgres", 0.0)
        rows.append((db, k, f"{cpu:.2f}", f"{k} x {empty:.2f}", f"{gross:.2f}", f"{net:.2f}",
                     f"{net / one[db][1]:.2f} x", f"{gross / one[db][0]:.2f} x", f"{1000 * server / n:.2f}",
                     f"{bodies:,}"))
    return (table(["database", "instances", "smartacct CPU s", "empty passes CPU s", "ms/msg", "ms/msg net",
                   "net vs 1 instance", "gross vs 1 instance", "postgres ms/msg", "bodies fetched"], rows,
                  f"CPU per message, {n:,} messages: all instances together, against one instance")
            + "\nsmartacct CPU: user + system of every `run --once` process from start to exit (wait4). Net: "
              "less an empty pass per instance (the median of 3 over an empty INBOX, same run): starting, "
              "connecting and exiting, which an instance costs whatever the number of messages. postgres: "
              "the server's CPU until done (sampled from /proc). bodies fetched: message bodies Dovecot sent "
              "to the instances (body_count of its logout lines); N means none was downloaded twice.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="messages per configuration (default 1000)")
    ap.add_argument("--instances", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--profiler", choices=("auto", "none", "cprofile", "pyinstrument", "py-spy"), default="auto",
                    help="auto: py-spy when on PATH, else cProfile")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    profiler = args.profiler
    if profiler == "auto":
        profiler = "py-spy" if shutil.which("py-spy") else "cprofile"
    header("Scale: instances on PostgreSQL, SQLite vs PostgreSQL", n=args.n, instances=args.instances,
           profiler=profiler, relay="sink")

    configs = [("SQLite", 1)] + [("PostgreSQL", k) for k in args.instances]
    users = {c: f"scale-{c[0].lower()}-{c[1]}@example.com" for c in configs}
    empty_user = "scale-empty@example.com"
    results = []
    cpu_tables = []
    with Bench("scale", keep=args.keep) as bench:
        dovecot = bench.dovecot([SHARED, *users.values(), "profile@example.com", empty_user])
        relay = bench.relay(None)
        pg = bench.postgres()
        raws = request_messages(args.n, tag="s-")
        note("an empty pass, 3 times per database: what each instance costs whatever the messages")
        empty = {"SQLite": empty_pass_cpu(bench, dovecot, relay, empty_user, None),
                 "PostgreSQL": empty_pass_cpu(bench, dovecot, relay, empty_user, pg.fresh_database())}
        cpu_results = []
        for db, k in configs:
            user = users[(db, k)]
            note(f"{db}, {k} instance(s): preparing the INBOX")
            prepare_inbox(dovecot, user, raws)
            url = pg.fresh_database() if db == "PostgreSQL" else None
            note(f"{db}, {k} instance(s): running")
            before = relay.received()
            log_at = len(dovecot.log)
            seconds, exited, installs, cpu_rows, busy, crashed, cpu = run_instances(bench, dovecot, relay, user,
                                                                                     url, k, args.n)
            cpu_results.append((db, k, cpu, empty[db], bodies_fetched(dovecot, user, log_at),
                                dict((name, c) for name, c, _ in cpu_rows)))
            verdict = verify_ingest(Pass(installs[0], None), dovecot, user, relay, args.n, before,  # type: ignore[arg-type]
                                    strict=False)
            note(verdict)
            check = verdict.removeprefix("PROBLEM: ") if verdict.startswith("PROBLEM") else "ok"
            if crashed:
                check += f"; {len(crashed)} instance(s) crashed ({crashed[0]})"
            results.append((db, k, seconds, args.n / seconds, exited, events(installs, "message.skipped"),
                            events(installs, "message.duplicate"), events(installs, "mailbox.unavailable"), check))
            cpu_tables.append((f"{db}, {k} instance(s)", cpu_rows, busy))

        if profiler != "none":
            note(f"profile: one PostgreSQL instance under {profiler}")
            prepare_inbox(dovecot, "profile@example.com", raws)
            out = bench.root / f"scale.{profiler}"
            before = relay.received()
            p = ingest_pass(bench, dovecot, relay, "profile@example.com", database_url=pg.fresh_database(),
                            profiler=profiler, profile_out=out)
            note(verify_ingest(p, dovecot, "profile@example.com", relay, args.n, before))

        base = {db: s for db, k, s, *_ in results if k == 1}
        print(table(["database", "instances", "done s", "msg/s", "speed-up vs 1 instance", "all exited s",
                     "message.skipped", "message.duplicate", "mailbox.unavailable", "check afterwards"],
                    [(db, k, s, rate, f"{base[db] / s:.2f} x", ex, sk, du, un, v)
                     for db, k, s, rate, ex, sk, du, un, v in results],
                    f"Ingest of {args.n:,} messages (fetch, parse, store, file, send the reviews)"))
        sqlite_s, pg_s = base["SQLite"], base["PostgreSQL"]
        print(f"\nSQLite / PostgreSQL, one instance: SQLite has {pg_s / sqlite_s:.2f} x the throughput of PostgreSQL.")
        print(cpu_table(cpu_results, args.n))
        print("done: INBOX empty, N requests stored and N reviews sent (polled every 0.25 s); msg/s and "
              "speed-up are computed from it; when that never happened (an instance crashed, say), the time until "
              "the last `run --once` ended. all exited: until the last `run --once` ended.")
        print("message.skipped: a message another instance had claimed, left unfetched; message.duplicate: one another "
              "instance had handled already; mailbox.unavailable: a failed IMAP command, after which the loop "
              "waits (up to 60 s) before its next pass. Log lines summed over the instances.")
        for name, rows, busy in cpu_tables:
            print(table(["program", "CPU s", "of one core"], rows,
                        f"CPU by program until done: {name} (whole machine busy {100 * busy:.0f} %)"))
        if profiler != "none":
            print(f"\nprofiled pass (PostgreSQL, one instance, {args.n} messages): {p.finished.seconds:.1f} s "
                  f"under {profiler}")
            show_profile(profiler, out)
    return 0


if __name__ == "__main__":
    run(main)
