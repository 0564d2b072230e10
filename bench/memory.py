"""Memory (issue 8, item 5): peak RSS of `smartacct run --once` ingesting N messages, and of the idle daemon.

The same setup as bench/ingest.py (private Dovecot, SMTP relay sink in its own process,
SQLite). For each N the pass runs as a subprocess; its peak RSS comes from wait4()'s
ru_maxrss, cross-checked with VmHWM polled from /proc, and VmRSS is sampled over time to
show whether memory grows with the number of messages (it should not: batches are
streamed). Baseline in the same run: the same pass over an empty INBOX. Then `smartacct
run` (IDLE) idles on an empty INBOX, takes a burst of messages, and idles again.

    .venv/bin/python bench/memory.py                   # N = 1,000 and 10,000; burst of 1,000
    .venv/bin/python bench/memory.py --n 2000 --burst 200
"""

from __future__ import annotations

import argparse
import os
import time

from common import (
    run,
    SHARED,
    Bench,
    Finished,
    Install,
    Pass,
    count,
    fill_maildir,
    header,
    imap_backends,
    note,
    partner_cap,
    prepare_inbox,
    request_messages,
    table,
    verify_ingest,
    vm_kb,
    wait_until,
)

TARGET_MB = 80                   # issue 16, goal 5


def run_sampled(bench: Bench, inst: Install) -> tuple[Finished, list[tuple[float, int]]]:
    """`smartacct run --once` to its end; VmRSS sampled every 0.1 s."""
    started = time.perf_counter()
    with open(inst.root / "stderr.txt", "wb") as err:
        proc = bench.spawn(inst.command("run", "--once"), cwd=inst.root, env=inst.env(), stderr=err)
    samples: list[tuple[float, int]] = []
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss, hwm = vm_kb(proc.pid, "VmRSS"), vm_kb(proc.pid, "VmHWM")
        if rss:
            samples.append((time.perf_counter() - started, rss))
        peak = max(peak, hwm)
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"smartacct exited {proc.returncode}: {(inst.root / 'stderr.txt').read_text()[-2000:]}")
    return Finished(time.perf_counter() - started, proc.returncode, usage.ru_maxrss, peak), samples


def at_fraction(samples: list[tuple[float, int]], fraction: float) -> int:
    if not samples:
        return 0
    end = samples[-1][0]
    for t, rss in samples:
        if t >= fraction * end:
            return rss
    return samples[-1][1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--burst", type=int, default=1000, help="messages the idle daemon takes in between (default 1000)")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idling before reading RSS (default 5)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    header("Memory: peak RSS of an ingest pass, RSS of the idle daemon", n=args.n, burst=args.burst,
           idle_seconds=args.idle, database="SQLite", relay="sink")
    users = [SHARED, "empty@example.com", "idle@example.com"] + [f"mem{n}@example.com" for n in args.n]
    rows = []
    curves = []
    with Bench("memory", keep=args.keep) as bench:
        dovecot = bench.dovecot(users)
        relay = bench.relay(None)

        note("baseline: a pass over an empty INBOX")
        inst = Install(bench.path("install"), imap_backends(dovecot, "empty@example.com", relay,
                                                                  hourly_cap=partner_cap(0)))
        empty, _ = run_sampled(bench, inst)
        rows.append(("empty INBOX (baseline)", 0, empty.seconds, empty.maxrss_kb / 1024, empty.peak_kb / 1024))

        for n in args.n:
            user = f"mem{n}@example.com"
            note(f"N={n}: preparing the INBOX")
            prepare_inbox(dovecot, user, request_messages(n, tag=f"m{n}-"))
            note(f"N={n}: smartacct run --once")
            inst = Install(bench.path("install"), imap_backends(dovecot, user, relay, hourly_cap=partner_cap(n)))
            before = relay.received()
            finished, samples = run_sampled(bench, inst)
            note(verify_ingest(Pass(inst, finished), dovecot, user, relay, n, before))
            rows.append((f"ingest {n:,} messages", n, finished.seconds, finished.maxrss_kb / 1024,
                         finished.peak_kb / 1024))
            curves.append((n, [at_fraction(samples, f) / 1024 for f in (0.1, 0.25, 0.5, 0.75, 1.0)]))

        note("idle daemon: smartacct run on an empty INBOX")
        inst = Install(bench.path("install"), imap_backends(dovecot, "idle@example.com", relay,
                                                                  hourly_cap=partner_cap(args.burst)))
        with open(inst.root / "stderr.txt", "wb") as log:
            daemon = bench.spawn(inst.command("run"), cwd=inst.root, env=inst.env(), stdout=log, stderr=log)
        wait_until(lambda: "imap.connected" in inst.log(), timeout=30, what="imap.connected")
        time.sleep(args.idle)
        idle_rss, idle_hwm = vm_kb(daemon.pid, "VmRSS"), vm_kb(daemon.pid, "VmHWM")
        note(f"idle daemon: a burst of {args.burst} messages")
        fill_maildir(dovecot, "idle@example.com", request_messages(args.burst, tag="burst-"))
        wait_until(lambda: inst.scalar("SELECT count(*) FROM outbox WHERE state = 'sent'") >= args.burst
                   and count(dovecot, "idle@example.com") == 0, timeout=3600, step=0.5, what="the burst handled")
        time.sleep(args.idle)
        after_rss, after_hwm = vm_kb(daemon.pid, "VmRSS"), vm_kb(daemon.pid, "VmHWM")
        daemon.terminate()
        daemon.wait(timeout=30)

    print(table(["pass", "messages", "seconds", "peak RSS MB (ru_maxrss)", "peak RSS MB (VmHWM polled)"], rows,
                f"smartacct run --once (target: peak under {TARGET_MB} MB at 10,000 messages)"))
    print(table(["messages", "RSS MB at 10 %", "25 %", "50 %", "75 %", "end"],
                [(n, *c) for n, c in curves], "RSS over the pass (share of its wall time)"))
    print(table(["idle daemon (smartacct run, IDLE)", "RSS MB", "peak MB (VmHWM)"],
                [(f"after {args.idle:g} s idle, empty INBOX", idle_rss / 1024, idle_hwm / 1024),
                 (f"after a burst of {args.burst:,} messages, {args.idle:g} s idle", after_rss / 1024,
                  after_hwm / 1024)],
                "Idle daemon"))
    return 0


if __name__ == "__main__":
    run(main)
