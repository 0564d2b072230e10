"""Shared setup for the benchmarks (issue 8): private servers, configs, messages, timing, tables.

Every script builds a `Bench` and gets its servers from it: Dovecot (tests/servers.py), an
SMTP relay in a process of its own (so it never competes with the code under test for
the GIL), PostgreSQL (tests/pg.py). All of them live in one temp dir on free loopback
ports and are stopped when the script ends, also on Ctrl-C or SIGTERM.

Run as `python bench/common.py relay --port P [--lmtp-port L]` it is that relay: it
accepts everything, delivers to Dovecot over one LMTP connection when given a port
(else it only counts), and answers `VRFY count@bench` with how many it took.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import pstats
import shutil
import signal
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from e2e import good_fields, request_email
from servers import HOST, Dovecot, TlsCert, free_port, make_cert, wait_for_port

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
SMARTACCT = str(Path(PYTHON).parent / "smartacct")
SHARED = "smart-accounts@example.com"
PASSWORD = "secret"           # what Dovecot.add_user gives every user
PASSWORD_ENV = "SMARTACCT_IMAP_PASSWORD"


# --------------------------------------------------------------------------- the bench


class Interrupted(KeyboardInterrupt):
    """SIGTERM/SIGHUP, turned into the same unwinding Ctrl-C gets."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run(main: Callable[[], int]) -> None:
    """A benchmark's entry point: its exit status, or 130 once Ctrl-C or SIGTERM stopped it."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)


class Bench:
    """One temp dir, the servers in it, and every child process; all stopped on exit."""

    def __init__(self, name: str, *, keep: bool = False) -> None:
        self.name = name
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        os.chmod(self.root, 0o755)          # Dovecot's users (nobody) must traverse it
        self._stack = contextlib.ExitStack()
        self.roots: list[int] = []          # detached process trees of ours (PostgreSQL), for CpuSampler
        self._children: list[subprocess.Popen[Any]] = []
        self._cert: TlsCert | None = None
        self._counter = 0

    def __enter__(self) -> Self:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _raise_interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started with SIGINT ignored
        self._stack.callback(self._cleanup_dir)
        self._stack.callback(self._kill_children)
        return self

    def __exit__(self, *exc: object) -> None:
        # Ctrl-C during cleanup must not leave servers behind: ignore it until done.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._stack.close()
        finally:
            signal.signal(signal.SIGINT, old)

    def path(self, name: str) -> Path:
        self._counter += 1
        p = self.root / f"{self._counter:02d}-{name}"
        p.mkdir(parents=True)
        return p

    # --- servers -------------------------------------------------------------------------------

    def dovecot(self, users: Sequence[str] = (), extra_conf: str = "") -> Dovecot:
        """A private Dovecot; add every user now: it reads its passwd-file lazily and may miss late ones."""
        if self._cert is None:
            self._cert = make_cert(self.path("tls"))
        # Dovecot's unix sockets live under its root: keep the path short (108 bytes).
        root = Path(tempfile.mkdtemp(prefix="bdc-"))
        server = Dovecot(root, self._cert)
        self._stack.callback(shutil.rmtree, root, True)
        self._stack.callback(server.kill)
        for user in users:
            server.add_user(user)
        if extra_conf:
            server.conf.write_text(server.conf.read_text() + extra_conf)
        server.start()
        return server

    def relay(self, dovecot: Dovecot | None = None) -> Relay:
        """An SMTP relay in its own process: a sink, or delivering into `dovecot` over LMTP."""
        relay = Relay(HOST, free_port(), lmtp_port=dovecot.lmtp_port if dovecot else None)
        cmd = [PYTHON, str(Path(__file__).resolve()), "relay", "--port", str(relay.port)]
        if dovecot is not None:
            cmd += ["--lmtp-port", str(dovecot.lmtp_port)]
        with open(self.root / f"relay-{relay.port}.log", "ab") as log:   # the child keeps its own copy
            relay.proc = self.spawn(cmd, stdout=log, stderr=log)
        self._stack.callback(relay.stop)
        wait_for_port(relay.port, timeout=20)
        return relay

    def postgres(self) -> Any:
        from pg import (
            Postgres,  # tests/pg.py: initdb on a free port, as `postgres` when root
        )

        root = Path(tempfile.mkdtemp(prefix="bpg-"))
        server = Postgres(root)
        self._stack.callback(shutil.rmtree, root, True)
        self._stack.callback(server.stop)
        server.start()
        with contextlib.suppress(OSError, ValueError):
            self.roots.append(int((server.data / "postmaster.pid").read_text().split()[0]))
        server.make_template()
        return server

    # --- child processes -----------------------------------------------------------------------

    def spawn(self, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """A child in its own process group, killed at the end whatever happens."""
        proc = subprocess.Popen(list(cmd), start_new_session=True, **kw)
        self._children.append(proc)
        return proc

    def _kill_children(self) -> None:
        for proc in reversed(self._children):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    proc.wait()

    def _cleanup_dir(self) -> None:
        if self.keep:
            print(f"(kept {self.root})", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Relay:
    host: str
    port: int
    lmtp_port: int | None = None
    proc: subprocess.Popen[Any] | None = None

    def received(self) -> int:
        """How many messages the relay has accepted (and delivered, with LMTP) so far."""
        with smtplib.SMTP(self.host, self.port, timeout=30) as smtp:
            code, text = smtp.verify("count@bench")
        if code != 252:
            raise RuntimeError(f"relay answered {code} {text!r} to VRFY")
        return int(text.split()[0])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------- mail in


PARTNERS = 50   # request_messages spreads its requests over this many partners


def partner_cap(n: int) -> int:
    """max_emails_per_address_per_hour under which none of N requests' reviews waits an hour."""
    return max(20, -(-n // PARTNERS))


def request_messages(n: int, *, tag: str = "r") -> list[bytes]:
    """N valid request emails, each for a domain of its own, from 50 partners; wire format (CRLF)."""
    out = []
    for i in range(n):
        domain = f"{tag}{i:06d}.example"
        partner = f"partner{i % PARTNERS}@partner{i % PARTNERS}.example"
        msg = request_email(good_fields(domain=domain, account_name=f"Account {tag} {i}"), sender=partner,
                            message_id=f"<{tag}-{i}-{os.getpid()}@partner{i % PARTNERS}.example>")
        out.append(msg.as_bytes())
    return out


def fill_maildir(dovecot: Dovecot, user: str, raws: Sequence[bytes]) -> float:
    """Put messages straight into `user`'s Maildir new/, as a local delivery agent would.

    Orders of magnitude faster than LMTP for 10^4 messages; Dovecot assigns the UIDs at
    the next SELECT (call `warm` before timing anything). Returns the seconds it took.
    """
    started = time.perf_counter()
    home = dovecot.root / "mail" / user
    if not home.exists():
        dovecot.add_user(user)
    maildir = home / "Maildir"
    st = home.stat()
    for sub in ("", "new", "cur", "tmp"):
        d = maildir / sub
        d.mkdir(exist_ok=True)
        os.chown(d, st.st_uid, st.st_gid)
    now = int(time.time())
    for i, raw in enumerate(raws):
        data = raw.replace(b"\r\n", b"\n")        # Maildir stores LF; Dovecot serves CRLF
        vsize = len(data) + data.count(b"\n")
        name = f"{now}.M{i:06d}P{os.getpid()}.bench,S={len(data)},W={vsize}"
        tmp = maildir / "tmp" / name
        tmp.write_bytes(data)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.rename(tmp, maildir / "new" / name)
    return time.perf_counter() - started


def prepare_inbox(dovecot: Dovecot, user: str, raws: Sequence[bytes]) -> None:
    """`raws` waiting in `user`'s INBOX, indexed by Dovecot, nothing else there."""
    fill_maildir(dovecot, user, raws)
    found = warm(dovecot, user)
    if found != len(raws):
        raise RuntimeError(f"{user}: {found} messages in INBOX, expected {len(raws)}")


def deliver_lmtp(dovecot: Dovecot, user: str, raws: Sequence[bytes]) -> float:
    started = time.perf_counter()
    dovecot.deliver_many(user, list(raws))
    return time.perf_counter() - started


def imap(dovecot: Dovecot, user: str) -> Any:
    from imapclient import IMAPClient

    client = IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=120)
    client.login(user, PASSWORD)
    return client


def warm(dovecot: Dovecot, user: str) -> int:
    """SELECT the inbox once so Dovecot indexes what was dropped into the Maildir; returns its count."""
    with imap(dovecot, user) as client:
        info = client.select_folder("INBOX")
        client.search("ALL")
        return int(info[b"EXISTS"])


def count(dovecot: Dovecot, user: str, folder: str = "INBOX") -> int:
    with imap(dovecot, user) as client:
        if not client.folder_exists(folder):
            return 0
        return int(client.folder_status(folder, ["MESSAGES"])[b"MESSAGES"])


def raw_fetch(dovecot: Dovecot, user: str, batch: int = 250) -> tuple[int, int, float]:
    """The baseline: log in, SELECT, UID SEARCH, FETCH BODY.PEEK[] in batches. (messages, bytes, s)."""
    started = time.perf_counter()
    n = size = 0
    with imap(dovecot, user) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        for start in range(0, len(uids), batch):
            data = client.fetch(uids[start:start + batch], ["BODY.PEEK[]"])
            for item in data.values():
                n += 1
                size += len(item[b"BODY[]"])
    return n, size, time.perf_counter() - started


# --------------------------------------------------------------------------- smartacct


def imap_backends(dovecot: Dovecot, user: str, relay: Relay, *, idle: bool = True,
                  poll_interval: str = "30s", hourly_cap: int | None = None) -> str:
    """[mailbox], [smtp] and [workflow] for smartacct on `dovecot` and `relay`; `hourly_cap` raises
    max_emails_per_address_per_hour where one partner gets more reviews than the default allows."""
    cap = "" if hourly_cap is None else f"max_emails_per_address_per_hour = {hourly_cap}\n"
    return (
        f'[mailbox]\nbackend = "imap"\nhost = "{dovecot.host}"\nport = {dovecot.imap_port}\n'
        f'security = "none"\nusername = "{user}"\npassword_env = "{PASSWORD_ENV}"\n'
        f'folder = "INBOX"\nidle = {"true" if idle else "false"}\npoll_interval = "{poll_interval}"\n'
        f'[smtp]\nbackend = "smtp"\nhost = "{relay.host}"\nport = {relay.port}\nsecurity = "none"\n'
        f'from_address = "Smart Accounts <{SHARED}>"\n'
        '[workflow]\npartner_domains = ["*"]\n'    # required (DESIGN §5); request_messages uses 50 partner domains
        + cap
    )


@dataclass
class Install:
    """A config file and its directory, as an admin would set smartacct up."""

    root: Path
    backends: str
    database_url: str | None = None       # None: SQLite in root/var/
    extra: str = ""

    def __post_init__(self) -> None:
        self.config.write_text(
            self.backends + f'[database]\nurl = "{self.db_url}"\n'
            f'[logging]\nfile = "smartacct.log"\n{self.extra}')

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def db_url(self) -> str:
        return self.database_url or "sqlite:///var/smartacct.db"

    @property
    def log_file(self) -> Path:
        return self.root / "smartacct.log"

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""

    def env(self) -> dict[str, str]:
        env = {**os.environ, PASSWORD_ENV: PASSWORD}
        env.pop("SMARTACCT_CONFIG", None)
        return env

    def command(self, *args: str) -> list[str]:
        return [SMARTACCT, "-c", str(self.config), *args]

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.database_url:
            import psycopg

            with psycopg.connect(self.database_url) as conn:
                return conn.execute(sql).fetchall()  # type: ignore[arg-type]
        with contextlib.closing(sqlite3.connect(self.root / "var" / "smartacct.db")) as db:
            return db.execute(sql).fetchall()

    def scalar(self, sql: str) -> Any:
        return self.query(sql)[0][0]


@dataclass
class Finished:
    seconds: float
    returncode: int
    maxrss_kb: int             # ru_maxrss of the child (kB on Linux)
    peak_kb: int = 0           # VmHWM seen while polling /proc, when polled
    stderr: str = ""           # the tail of its stderr when it failed
    cpu: float = 0.0           # user + system CPU seconds of the child (and its waited-for children), wait4()


def run_child(bench: Bench, cmd: Sequence[str], *, cwd: Path, env: dict[str, str],
              poll_memory: bool = False, timeout: float = 3600, check: bool = True) -> Finished:
    """Run a child to its end; wall time, exit status and its peak RSS from wait4()."""
    err_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
    started = time.perf_counter()
    with open(err_path, "wb") as err:   # the child keeps its own copy
        proc = bench.spawn(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    peak = 0
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if poll_memory:
            peak = max(peak, vm_kb(proc.pid, "VmHWM"))
        if time.perf_counter() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"{' '.join(cmd)} did not finish within {timeout}s")
        time.sleep(0.02 if not poll_memory else 0.05)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = err_path.read_text(errors="replace")[-3000:] if proc.returncode else ""
    if proc.returncode != 0 and check:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{stderr}")
    return Finished(seconds, proc.returncode, usage.ru_maxrss, peak, stderr, usage.ru_utime + usage.ru_stime)


def vm_kb(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a live process in kB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def wait_until(probe: Callable[[], Any], timeout: float = 30, step: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or probe}")
        time.sleep(step)


# --------------------------------------------------------------------------- one ingest pass


@dataclass
class Pass:
    """One `smartacct run --once` over a prepared inbox, and what it left behind."""

    install: Install
    finished: Finished
    cpu: list[tuple[str, float, str]] = field(default_factory=list)
    busy: float = 0.0


def ingest_pass(bench: Bench, dovecot: Dovecot, relay: Relay, user: str, *, database_url: str | None = None,
                profiler: str = "none", profile_out: Path | None = None, poll_memory: bool = False,
                extra: str = "", hourly_cap: int | None = None) -> Pass:
    inst = Install(bench.path("install"), imap_backends(dovecot, user, relay, hourly_cap=hourly_cap), database_url,
                   extra)
    cmd = inst.command("run", "--once")
    if profiler != "none":
        assert profile_out is not None
        cmd = profiler_command(profiler, profile_out, cmd)
    with CpuSampler(bench.roots) as cpu:
        finished = run_child(bench, cmd, cwd=inst.root, env=inst.env(), poll_memory=poll_memory)
    return Pass(inst, finished, cpu.rows(), cpu.machine_busy)


def verify_ingest(p: Pass, dovecot: Dovecot, user: str, relay: Relay | None, n: int,
                  relay_before: int = 0, strict: bool = True) -> str:
    """N requests stored, N reviews queued and sent, N received by the relay, the inbox empty."""
    inst = p.install
    requests = inst.scalar("SELECT count(*) FROM request WHERE state = 'awaiting_confirmation'")
    sent = inst.scalar("SELECT count(*) FROM outbox WHERE kind = 'review' AND state = 'sent'")
    left, processed = count(dovecot, user), count(dovecot, user, "Processed")
    got = relay.received() - relay_before if relay is not None else sent
    problems = []
    if requests != n:
        problems.append(f"{requests} requests")
    if sent != n:
        problems.append(f"{sent} reviews sent")
    if got != n:
        problems.append(f"{got} reviews at the relay")
    if left:
        problems.append(f"{left} left in INBOX")
    if processed != n:
        problems.append(f"{processed} in Processed")
    if problems and not strict:
        return "PROBLEM: " + ", ".join(problems)
    if problems:
        raise RuntimeError(f"ingest of {n} messages incomplete: " + ", ".join(problems)
                           + f"\nlog tail:\n{inst.log()[-2000:]}")
    return (f"verified: {requests:,} requests, {sent:,} reviews sent, {got:,} received by the relay, "
            f"INBOX empty, {processed:,} in Processed")


def show_profile(kind: str, out: Path, limit: int = 25) -> None:
    """Print a profile: the where-does-it-go breakdown and the top functions."""
    if kind == "cprofile":
        stats = load_stats(out)
        total = max((c for label, c, _ in breakdown(stats) if label.startswith("whole")), default=0.0)
        print(table(["where (cProfile, cumulative)", "s", "calls", "share"],
                    [(label, cum, calls, f"{100 * cum / total:.0f} %" if total else "-")
                     for label, cum, calls in breakdown(stats)],
                    "Profile: where an ingest pass goes"))
        print(f"\n### Profile: top {limit} by cumulative time\n\n```\n{top_lines(stats, 'cumulative', limit)}\n```")
        print(f"\n### Profile: top {limit} by own time\n\n```\n{top_lines(stats, 'tottime', limit)}\n```")
    elif kind == "py-spy":
        print(table(["where (py-spy samples, inclusive)", "share"],
                    [(label, f"{share:.1f} %") for label, share in pyspy_breakdown(out)],
                    "Profile: where an ingest pass goes"))
        print(f"\n### Profile (py-spy, sampled): top {limit} functions by inclusive time\n\n```\n"
              f"{pyspy_top(out, limit)}\n```")
        for func, suffix in DRILL:
            callees = pyspy_children(out, func, suffix)
            if callees:
                print(table([f"under {func} ({suffix})", "% of all samples"], [(c, f"{v:.1f}") for c, v in callees]))
    elif kind == "pyinstrument":
        text = out.read_text(errors="replace").splitlines()
        print("\n### Profile (pyinstrument)\n\n```\n" + "\n".join(text[:120]) + "\n```")


# --------------------------------------------------------------------------- SQL seen in-process


class SqlRecorder:
    """Every statement peewee runs on `db` while active: count and time per distinct SQL text."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.stats: dict[str, list[Any]] = {}      # sql -> [count, seconds, example params]

    def __enter__(self) -> Self:
        self.db.query_hooks.append(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.query_hooks.remove(self._hook)

    def _hook(self, event: Any) -> None:
        entry = self.stats.setdefault(event.sql, [0, 0.0, event.params])
        entry[0] += 1
        entry[1] += event.duration

    @property
    def statements(self) -> int:
        return sum(e[0] for e in self.stats.values())

    def rows(self, per: int = 1, limit: int = 12, width: int = 110) -> list[tuple[str, float, float]]:
        """(SQL, statements per unit, ms per unit), the costliest first."""
        out = []
        for sql, (n, seconds, _params) in sorted(self.stats.items(), key=lambda kv: -kv[1][1])[:limit]:
            text = " ".join(sql.split())
            out.append((text if len(text) <= width else text[:width - 1] + "…", n / per, 1000 * seconds / per))
        return out

    def explain(self, predicate: Callable[[str], bool]) -> list[tuple[str, str]]:
        """EXPLAIN QUERY PLAN (SQLite) / EXPLAIN (PostgreSQL) of the recorded statements matching `predicate`."""
        import peewee

        out = []
        for sql, (_n, _s, params) in list(self.stats.items()):
            if not predicate(sql):
                continue
            prefix = "EXPLAIN " if isinstance(self.db, peewee.PostgresqlDatabase) else "EXPLAIN QUERY PLAN "
            with self.db.atomic():
                plan = self.db.execute_sql(prefix + sql, params).fetchall()
            lines = [str(r[-1]) for r in plan]
            out.append((" ".join(sql.split()), "\n".join(lines)))
        return out


# --------------------------------------------------------------------------- CPU by process


class CpuSampler:
    """CPU seconds used per program name (smartacct, imap, postgres, ...) over a window.

    Polls /proc every `step` seconds and keeps each process's first and last reading, so
    short-lived ones (IMAP sessions, PostgreSQL backends) count up to their last sample.
    """

    def __init__(self, roots: Sequence[int] = (), step: float = 0.2) -> None:
        import threading

        self.step = step
        # Only our own process tree (and PostgreSQL's, which pg_ctl detaches): the machine may
        # be shared, and other people's test runs must not count.
        self.roots = {os.getpid(), *roots}
        self._seen: dict[int, tuple[str, int, int]] = {}     # pid -> (name, first ticks, last ticks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._hz = os.sysconf("SC_CLK_TCK")
        self._busy0 = self._busy1 = (0, 0)
        self.seconds = 0.0

    def __enter__(self) -> Self:
        self._me = os.getpid()
        self._sample(first=True)
        self._busy0 = _cpu_busy()
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._busy1 = _cpu_busy()
        self.seconds = time.perf_counter() - self._t0

    def _loop(self) -> None:
        while not self._stop.wait(self.step):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        stats: dict[int, str] = {}
        parent: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            stats[pid] = stat
            parent[pid] = int(stat[stat.rfind(")") + 2:].split()[1])
        ours: dict[int, bool] = {}

        def is_ours(pid: int) -> bool:
            chain = []
            while pid not in ours:
                if pid in self.roots:
                    ours[pid] = True
                    break
                if pid not in parent or pid <= 1:
                    ours[pid] = False
                    break
                chain.append(pid)
                pid = parent[pid]
            for p in chain:
                ours[p] = ours[pid]
            return ours[pid]

        for pid, stat in stats.items():
            if not is_ours(pid):
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            name = _program(stat, cmd)
            fields = stat[stat.rfind(")") + 2:].split()
            ticks = int(fields[11]) + int(fields[12])
            old = self._seen.get(pid)
            if old is None or ticks < old[2]:             # new, or the pid was reused
                self._seen[pid] = (name, ticks if first else 0, ticks)
            else:
                self._seen[pid] = (old[0], old[1], ticks)

    def by_program(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, (name, first, last) in self._seen.items():
            if pid == self._me:
                name = "bench (this script)"
            out[name] = out.get(name, 0.0) + (last - first) / self._hz
        return {k: v for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0}

    @property
    def machine_busy(self) -> float:
        """Share of all cores busy over the window (0..1), from /proc/stat: everyone's processes."""
        busy = self._busy1[0] - self._busy0[0]
        total = self._busy1[1] - self._busy0[1]
        return busy / total if total else 0.0

    def rows(self) -> list[tuple[str, float, str]]:
        """(program, CPU seconds, % of one core over the window)."""
        return [(name, cpu, f"{100 * cpu / self.seconds:.0f} %") for name, cpu in self.by_program().items()
                if cpu >= 0.05]

    def snapshot(self) -> tuple[list[tuple[str, float, str]], float]:
        """rows() and machine_busy as of now, the window still open."""
        self._sample()
        self._busy1 = _cpu_busy()
        self.seconds = time.perf_counter() - self._t0
        return self.rows(), self.machine_busy


def _cpu_busy() -> tuple[int, int]:
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def _program(stat: str, cmd: list[bytes]) -> str:
    comm = stat[stat.find("(") + 1:stat.rfind(")")]
    if comm.startswith(("kworker", "jbd2", "ksoftirq")):
        return "kernel threads (I/O, writeback)"
    args = [c.decode(errors="replace") for c in cmd if c]
    if any(a.endswith("/smartacct") for a in args[:3]) or "cProfile" in args or "pyinstrument" in args:
        return "smartacct"
    if any(a.endswith("bench/common.py") for a in args[:3]):
        return "smtp relay (aiosmtpd)"
    if comm.startswith(("postgres", "postmaster")):
        return "postgres"
    if comm in ("imap", "imap-login", "lmtp", "dovecot", "auth", "indexer", "indexer-worker", "config",
                "anvil", "log", "stats"):
        return "dovecot " + comm if comm != "dovecot" else "dovecot master"
    return comm


# --------------------------------------------------------------------------- profiles

# (label, file suffix, function) whose cumulative time tells where an ingest pass goes.
BREAKDOWN = [
    ("whole run (loop.run)", "daemon/engine/loop.py", "run"),
    ("  ingest_waiting", "daemon/engine/loop.py", "ingest_waiting"),
    ("    IMAP: fetch batches (FETCH SIZE + BODY[])", "daemon/mail/imap/fetch.py", "contents"),
    ("    IMAP: FETCH RFC822.SIZE", "daemon/mail/imap/fetch.py", "sizes"),
    ("    IMAP: file (one MOVE per message)", "daemon/mail/imap/mailbox.py", "file"),
    ("    IMAP: file_many (one MOVE per batch)", "daemon/mail/imap/mailbox.py", "file_many"),
    ("    IMAP: cursor save", "models/cursor.py", "save"),
    ("    ingest.handle", "daemon/engine/ingest.py", "handle"),
    ("      parse_message", "parsers/message.py", "parse_message"),
    ("      classify", "parsers/classify.py", "classify"),
    ("      validate", "parsers/validate.py", "validate"),
    ("      Effects.send (render + rows)", "daemon/engine/apply.py", "send"),
    ("        Renderer.compose", "daemon/mail/render.py", "compose"),
    ("        Renderer._render (Jinja2)", "daemon/mail/render.py", "_render"),
    ("      advisory lock (exclusive)", "models/locks.py", "exclusive"),
    ("      _begin_attempt (own commit)", "daemon/engine/ingest.py", "_begin_attempt"),
    ("  outbox.drain", "daemon/engine/outbox.py", "drain"),
    ("    SMTP send", "daemon/mail/smtp.py", "send"),
    ("    outbox claim query", "daemon/engine/outbox.py", "_claim_next"),
    ("  checks.run_checks", "daemon/engine/checks.py", "run_checks"),
    ("all SQL (peewee execute_sql)", "peewee.py", "execute_sql"),
    ("all commits (peewee commit)", "peewee.py", "commit"),
    ("log.event", "daemon/log.py", "event"),
]


def load_stats(path: Path) -> pstats.Stats:
    return pstats.Stats(str(path))


def breakdown(stats: pstats.Stats) -> list[tuple[str, float, int]]:
    """Cumulative seconds and call counts of the BREAKDOWN functions."""
    table = stats.stats  # type: ignore[attr-defined]
    rows = []
    for label, suffix, func in BREAKDOWN:
        cum, calls = 0.0, 0
        for (filename, _line, name), (cc, nc, _tt, ct, _callers) in table.items():
            if name == func and filename.endswith(suffix):
                cum += ct
                calls += cc
        rows.append((label, cum, calls))
    return rows


def top_lines(stats: pstats.Stats, sort: str, limit: int = 25) -> str:
    import io

    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(limit)
    text = out.getvalue()
    # Keep the table, drop pstats' preamble; shorten paths.
    body = text[text.find("   ncalls"):] if "   ncalls" in text else text
    for prefix in (str(REPO / ".venv" / "lib" / "python3.11" / "site-packages") + "/", str(REPO) + "/",
                   str(Path(sys.base_prefix) / "lib" / "python3.11") + "/"):
        body = body.replace(prefix, "")
    return body.rstrip()


def profiler_command(kind: str, out: Path, cmd: Sequence[str]) -> list[str]:
    """Wrap a smartacct command line in a profiler; `cmd[0]` is the smartacct script."""
    if kind == "cprofile":
        return [PYTHON, "-m", "cProfile", "-o", str(out), *cmd]
    if kind == "pyinstrument":
        return [PYTHON, "-m", "pyinstrument", "--renderer", "text", "--show-all", "-o", str(out), *cmd]
    if kind == "py-spy":
        spy = shutil.which("py-spy") or "py-spy"
        return [spy, "record", "--idle", "--rate", "200", "--format", "raw", "-o", str(out), "--", PYTHON, *cmd]
    raise ValueError(kind)


def pyspy_top(path: Path, limit: int = 25) -> str:
    """Inclusive sample counts per function from py-spy's collapsed stacks."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        samples = int(n)
        total += samples
        frames = stack.split(";")
        seen = set()
        for f in frames:
            name = _short_frame(f)
            if name not in seen:
                inclusive[name] = inclusive.get(name, 0) + samples
                seen.add(name)
        leaf = _short_frame(frames[-1])
        own[leaf] = own.get(leaf, 0) + samples
    lines = [f"{total} samples; inclusive % / self % / function"]
    for name, hits in sorted(inclusive.items(), key=lambda kv: -kv[1])[:limit]:
        lines.append(f"{100 * hits / total:6.1f} {100 * own.get(name, 0) / total:6.1f}  {name}")
    return "\n".join(lines)


def pyspy_breakdown(path: Path) -> list[tuple[str, float]]:
    """Share of samples (inclusive) under each BREAKDOWN function, from py-spy's collapsed stacks."""
    counts = [0] * len(BREAKDOWN)
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = [_short_frame(f) for f in stack.split(";")]
        for i, (_label, suffix, func) in enumerate(BREAKDOWN):
            for f in frames:
                name, _, where = f.partition(" (")
                if (name == func or name.endswith("." + func)) and where.rstrip(")").endswith(suffix):
                    counts[i] += int(n)
                    break
    return [(label, 100 * c / total if total else 0.0) for (label, _s, _f), c in zip(BREAKDOWN, counts)]


# Functions whose direct callees a py-spy profile breaks down (qualified name, file suffix).
DRILL = [
    ("_handle", "daemon/engine/ingest.py"),
    ("_new_request", "daemon/engine/ingest.py"),
    ("Effects.send", "daemon/engine/apply.py"),
    ("Renderer.compose", "daemon/mail/render.py"),
    ("drain", "daemon/engine/outbox.py"),
]


def pyspy_children(path: Path, func: str, suffix: str, limit: int = 8) -> list[tuple[str, float]]:
    """Share of all samples spent under each direct callee of `func` (first occurrence in a stack)."""
    under: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = [_short_frame(f) for f in stack.split(";")]
        for i, f in enumerate(frames):
            name, _, where = f.partition(" (")
            if name == func and where.rstrip(")").endswith(suffix):
                child = frames[i + 1] if i + 1 < len(frames) else "(self)"
                under[child] = under.get(child, 0) + int(n)
                break
    return [(name, 100 * c / total) for name, c in sorted(under.items(), key=lambda kv: -kv[1])[:limit]] \
        if total else []


def _short_frame(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for prefix in (str(REPO / ".venv" / "lib" / "python3.11" / "site-packages") + "/", str(REPO) + "/"):
        path = path.replace(prefix, "")
    return f"{name} ({path})"


# --------------------------------------------------------------------------- figures


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """A Markdown table (pastes into the README as is)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [f"\n### {title}\n" if title else ""]
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        lines.append("| " + " | ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] in "-.") and text not in ("-",) or text.endswith(" x")


def machine() -> str:
    """One line about where the figures came from."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    dovecot = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, Python {sys.version.split()[0]}, "
            f"Dovecot {dovecot.split()[0] if dovecot else '?'}, {dt.date.today().isoformat()}")


def background_load(seconds: float = 1.0) -> float:
    """Share of the machine busy before we start anything (someone else's tests, say)."""
    b0 = _cpu_busy()
    time.sleep(seconds)
    b1 = _cpu_busy()
    total = b1[1] - b0[1]
    return (b1[0] - b0[0]) / total if total else 0.0


def code_version() -> str:
    """The code the figures belong to: git HEAD, whether the source differs from it, and a digest."""
    import hashlib

    parts = ("daemon", "models", "parsers", "templates")
    digest = hashlib.sha256()
    for folder in parts:
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".j2"):
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", *parts)
    return f"{head}{' + uncommitted changes' if dirty else ''} (source sha256 {digest.hexdigest()[:12]})"


def header(title: str, **params: Any) -> None:
    print(f"## {title}\n")
    print(f"machine: {machine()}")
    print(f"code: {code_version()}")
    load = background_load()
    print(f"other load before the run: {100 * load:.0f} % of the machine busy"
          + ("  (WARNING: shared machine; figures will be noisy)" if load > 0.1 else ""))
    if params:
        print("parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    sys.stdout.flush()


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the relay process


def _relay_main(argv: Sequence[str]) -> None:
    import argparse
    import asyncio
    import concurrent.futures
    import threading

    from aiosmtpd.controller import Controller

    parser = argparse.ArgumentParser(prog="bench relay")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lmtp-port", type=int)
    args = parser.parse_args(argv)

    class Handler:
        """Accept every message; with an LMTP port, hand it to Dovecot first (one kept connection)."""

        def __init__(self) -> None:
            self.count = 0
            self.lock = threading.Lock()
            self.lmtp: smtplib.LMTP | None = None
            self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

        def _deliver(self, mail_from: str, rcpts: list[str], data: bytes) -> None:
            for attempt in (1, 2):
                try:
                    if self.lmtp is None:
                        self.lmtp = smtplib.LMTP(HOST, args.lmtp_port, timeout=30)
                    self.lmtp.sendmail(mail_from, rcpts, data)
                    return
                except (smtplib.SMTPServerDisconnected, OSError):
                    self.lmtp = None
                    if attempt == 2:
                        raise

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if args.lmtp_port:
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        self.pool, self._deliver, envelope.mail_from, list(envelope.rcpt_tos),
                        envelope.original_content or b"")
                except (smtplib.SMTPException, OSError) as exc:
                    return f"451 4.3.0 local delivery failed: {exc}"
            with self.lock:
                self.count += 1
            return "250 2.0.0 Message accepted"

        async def handle_VRFY(self, server: Any, session: Any, envelope: Any, address: str) -> str:
            return f"252 {self.count} received"

    controller = Controller(Handler(), hostname=HOST, port=args.port, data_size_limit=50_000_000)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["relay"]:
        _relay_main(sys.argv[2:])
    else:
        sys.exit("usage: python bench/common.py relay --port P [--lmtp-port L]")
