"""Crash-safety harness (issue 6, item 4; issue 7, item 2; DESIGN §4, §8): `smartacct run`
killed at random moments, alone or next to other instances.

A `Harness` drives one installation through phases of incoming mail (requests, then the
partners' and customers' replies). With one instance it starts the daemon as a
subprocess and kills it with SIGKILL after a random delay, again and again, until the
inbox is empty and the outbox has nothing queued. With several (`instances=3`) they all
work on the same mailbox and PostgreSQL database at once, each with its own config
copy and log file, and in each phase one of them, chosen at random, is killed at a
random share of the phase's work and restarted. A `Site` is the mail world around the
daemons: the Maildir backends, or Dovecot + an SMTP relay. The checks at the end read
what users see (the recipients' mailboxes, `requests list --json`, the inbox folders)
and the database (SQLite or PostgreSQL), read-only.

A kill that falls between the transport accepting an email and the outbox recording it
makes an instance send that outbox row again after the restart, or another instance
send it (at-least-once delivery): the same Message-ID twice. Each site keeps the
evidence to attribute every such copy to the process that sent it, and asserts that
the first copy was the last email of a killed process; a row sent by two live
instances has no such excuse.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import email.utils
import os
import random
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any, Iterable, Protocol

from models.outbox import message_id_hash
from e2e import Install, as_sent, good_fields, reply, request_email, wait_for
from servers import Dovecot, SmtpRelay

SHARED = "smart-accounts@example.com"
KILL_DELAY = (0.05, 0.8)        # seconds after the daemon logged daemon.started
STARTUP_KILLS = 0.25            # this share of the kills comes at a random moment of the startup instead
STARTUP_KILL_DELAY = (0.0, 0.7)  # seconds after the process is created
KILL_SHARE = (0.05, 0.95)       # several instances: a kill comes when this share of a phase's work is done
PHASE_TIMEOUT = 120.0           # several instances: seconds a phase may take
PARTNERS = 10
MAX_INCARNATIONS = 2000         # a daemon that never finishes fails the test, not the machine
SUBJECT_REF = re.compile(r"\[(SA-\d{6,})\]")
FILED = re.compile(r" message\.filed (?:ref=\S+ )?key=(\S+)")
DUPLICATE = re.compile(r" message\.duplicate (?:ref=\S+ )?key=(\S+)")
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.default)


def message_id_of(raw: bytes) -> str:
    value = str(_HEADERS.parsebytes(raw).get("Message-ID", "")).strip()
    return value[1:-1] if value.startswith("<") and value.endswith(">") else value


def header_of(raw: bytes, name: str) -> str:
    return str(_HEADERS.parsebytes(raw).get(name, ""))


# --------------------------------------------------------------------------- the accounts


@dataclass
class Account:
    """One account domain, its people, and the replies the scenario gives it (and what the
    scheduled checks did to it: "LAPSE", "REMINDER")."""

    n: int
    replies: list[str] = field(default_factory=list)   # "CONFIRM", "CANCEL", "ACCEPT", "DECLINE", "CANCEL_PENDING"
    ref: str | None = None

    @property
    def domain(self) -> str:
        return f"d{self.n:04d}.example"

    @property
    def partner(self) -> str:
        return f"p{self.n % PARTNERS}@partner.example"

    @property
    def customer(self) -> str:
        return f"carla@{self.domain}"

    @property
    def users(self) -> tuple[str, str]:
        return (f"dev1@{self.domain}", f"dev2@{self.domain}")

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.partner, self.customer, *self.users)

    def request(self) -> EmailMessage:
        fields = good_fields(self.domain, account_name=f"Company {self.n:04d}",
                             user_emails=", ".join(self.users))
        return request_email(fields, sender=self.partner)

    @property
    def state(self) -> str:
        """The state the replies lead to (DESIGN §1, §3)."""
        state = "awaiting_confirmation"
        for keyword in self.replies:
            state = {"CONFIRM": "pending_acceptance", "CANCEL": "cancelled", "ACCEPT": "active",
                     "DECLINE": "declined", "CANCEL_PENDING": "cancelled", "LAPSE": "lapsed",
                     "REMINDER": state}[keyword]
        return state

    def emails(self) -> Counter[tuple[str, str]]:
        """(kind, recipient) of every email the request is owed, once each."""
        due = Counter({("review", self.partner): 1})
        for keyword in self.replies:
            if keyword == "CONFIRM":
                due.update([("request_complete", self.partner), ("activation", self.customer)])
            elif keyword == "CANCEL":
                due.update([("cancelled_partner", self.partner)])
            elif keyword == "ACCEPT":
                due.update([("activation_confirmation", self.partner), ("welcome", self.customer),
                            *(("user_notice", u) for u in self.users)])
            elif keyword == "DECLINE":
                due.update([("declined", self.partner), ("decline_receipt", self.customer)])
            elif keyword == "CANCEL_PENDING":
                due.update([("cancelled_partner", self.partner), ("cancelled_customer", self.customer)])
            elif keyword == "LAPSE":
                due.update([("lapsed", self.partner)])
            elif keyword == "REMINDER":
                due.update([("reminder", self.customer)])
        return due


# --------------------------------------------------------------------------- sites


@dataclass
class Incarnation:
    """One `smartacct run` process: where and when it ran and how it ended."""

    started: float                  # time.time()
    starts_logged: int              # "daemon.started" lines in its slot's log before this one
    log_size: int                   # bytes in its slot's log before this one
    slot: int = 0                   # which of the harness's instances
    host: str = ""                  # the host name it ran under; "" for the machine's own
    pid: int = 0
    ended: float = 0.0
    how: str = ""                   # "kill" or "term"


@dataclass
class Resends:
    """Outbox rows sent again, each traced to the kill that explains it."""

    copies: list[str] = field(default_factory=list)     # Message-IDs whose resend added a copy
    rewrites: list[str] = field(default_factory=list)   # … whose resend replaced the first copy


class Site(Protocol):
    install: Install
    own_hosts: bool                 # several instances each need their own host name to tell their emails apart

    def deliver(self, messages: list[EmailMessage]) -> None:
        """Put messages in the shared inbox, in order."""

    def inbox_count(self) -> int: ...

    def folder(self, name: str) -> list[bytes]:
        """The messages in the inbox's filing folder `name` ("Processed", …); "" is the inbox."""

    def received(self, addresses: Iterable[str]) -> dict[str, list[bytes]]:
        """Every copy each address received."""

    def stopped(self, incarnation: Incarnation) -> None:
        """A daemon is down: note what the transport shows."""

    def resends(self, incarnations: list[Incarnation]) -> Resends:
        """Emails written or accepted again; asserts that a kill explains each one."""


class MaildirSite:
    """The embedded default: the inbox and the outgoing Maildir under `install.root/var`.

    An outgoing file is named after its Message-ID and the host name, so a resend by the
    same host replaces the file: no duplicate can appear, but the rewrite shows as a new
    inode and mtime. Several instances run under host names of their own (as on separate
    machines), so a row sent by two of them shows as two files.
    """

    own_hosts = True

    def __init__(self, install: Install) -> None:
        self.install = install
        self._snapshot: dict[str, dict[str, tuple[int, int]]] = {}   # per host: name -> (inode, mtime)
        self._last_stop: dict[str, str] = {}
        self._last_before_kill: set[str] = set()   # per kill, the file its process wrote last
        self._rewrites: list[str] = []

    def deliver(self, messages: list[EmailMessage]) -> None:
        for msg in messages:
            self.install.drop(msg)

    def inbox_count(self) -> int:
        return sum(1 for sub in ("new", "cur") for p in (self.install.inbox / sub).glob("*")
                   if not p.name.startswith("."))

    def folder(self, name: str) -> list[bytes]:
        base = self.install.inbox / (f".{name}" if name else "")
        subs = ("cur",) if name else ("new", "cur")
        return [p.read_bytes() for sub in subs for p in sorted((base / sub).glob("*"))]

    def received(self, addresses: Iterable[str]) -> dict[str, list[bytes]]:
        wanted = {a.lower(): a for a in addresses}
        got: dict[str, list[bytes]] = {a: [] for a in wanted.values()}
        for path in (self.install.outbox / "new").glob("*"):
            raw = path.read_bytes()
            to = email.utils.parseaddr(header_of(raw, "To"))[1].lower()
            got.setdefault(wanted.get(to, to), []).append(raw)
        return got

    def _written(self, host: str) -> dict[str, tuple[int, int]]:
        """The outgoing files `host` wrote ("": every file): name -> (inode, mtime)."""
        found: dict[str, tuple[int, int]] = {}
        for path in (self.install.outbox / "new").glob("*"):
            if host and path.name.split(".", 1)[1] != host:
                continue
            st = path.stat()
            found[path.name] = (st.st_ino, st.st_mtime_ns)
        return found

    def stopped(self, incarnation: Incarnation) -> None:
        host = incarnation.host
        now = self._written(host)
        before = self._snapshot.get(host, {})
        newest = max((sig[1] for sig in before.values()), default=0)
        for name, old in before.items():
            if name in now and now[name] != old:
                # Rewritten after a restart: it must be the last file written before the kill,
                # whose outbox row the dead process never marked sent.
                assert self._last_stop.get(host) == "kill", f"{name} rewritten after a clean stop"
                assert old[1] == newest, f"{name} rewritten, but it was not the last email before a kill"
                self._rewrites.append(name)
        if incarnation.how == "kill" and now:
            name, (_ino, mtime) = max(now.items(), key=lambda item: item[1][1])
            if mtime >= incarnation.started * 1e9:
                self._last_before_kill.add(name)
        self._snapshot[host] = now
        self._last_stop[host] = incarnation.how

    def resends(self, incarnations: list[Incarnation]) -> Resends:
        """Rewrites found at the stops; a Message-ID in files of several hosts was first written
        by a process killed right after (its last file) and then sent again by another."""
        files: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for path in (self.install.outbox / "new").glob("*"):
            files[message_id_of(path.read_bytes())].append((path.stat().st_mtime_ns, path.name))
        copies: list[str] = []
        for mid, written in files.items():
            for _mtime, name in sorted(written)[:-1]:
                assert name in self._last_before_kill, \
                    f"{mid} written by two instances, and {name} was not the last email of a killed one"
                copies.append(mid)
        return Resends(copies=copies, rewrites=list(self._rewrites))


class ImapSite:
    """Dovecot for every mailbox and the aiosmtpd relay that delivers into it over LMTP.

    The relay's hooks are wrapped to note when each email reached it and which process
    sent it (the owner of the client socket, looked up in /proc when it says EHLO), so
    every duplicate can be traced to the process that sent the first copy.
    """

    own_hosts = False

    def __init__(self, install: Install, dovecot: Dovecot, relay: SmtpRelay) -> None:
        self.install = install
        self.dovecot = dovecot
        self.relay = relay
        self.arrived: list[tuple[float, str, int | None]] = []     # (time the DATA arrived, Message-ID, pid)
        self.delivered: list[tuple[float, str, int | None]] = []   # the same, once the copy is in the mailbox
        self._arrival: dict[int, tuple[float, int | None]] = {}
        self.undelivered = 0
        handler = relay.handler
        handle_data, deliver = handler.handle_DATA, handler._deliver

        async def handle_EHLO(server: Any, session: Any, envelope: Any, hostname: str,
                              responses: list[str]) -> list[str]:
            # The client waits for this answer, so it is alive: its socket tells who it is.
            session.host_name = hostname   # a handle_EHLO hook must set it (aiosmtpd)
            session.smartacct_pid = socket_owner(session.peer[1], relay.port)
            return responses

        async def handle_DATA(server: Any, session: Any, envelope: Any) -> str:
            data = envelope.original_content or b""
            arrival = (time.time(), getattr(session, "smartacct_pid", None))
            self._arrival[id(data)] = arrival
            self.arrived.append((arrival[0], message_id_of(data), arrival[1]))
            return await handle_data(server, session, envelope)  # type: ignore[no-any-return]

        def _deliver(mail_from: str, rcpts: list[str], data: bytes) -> None:
            # When the sender dies before the answer, aiosmtpd cancels handle_DATA: a delivery
            # already started completes all the same, one not yet started never happens.
            deliver(mail_from, rcpts, data)
            at, pid = self._arrival.pop(id(data))
            self.delivered.append((at, message_id_of(data), pid))

        handler.handle_EHLO = handle_EHLO  # type: ignore[attr-defined]
        handler.handle_DATA = handle_DATA  # type: ignore[method-assign]
        handler._deliver = _deliver  # type: ignore[method-assign]

    def deliver(self, messages: list[EmailMessage]) -> None:
        self.dovecot.deliver_many(SHARED, [m.as_bytes(policy=email.policy.SMTP) for m in messages])

    def inbox_count(self) -> int:
        with self.dovecot.imap_client(SHARED) as client:
            return int(client.select_folder("INBOX", readonly=True)[b"EXISTS"])

    def folder(self, name: str) -> list[bytes]:
        return self.dovecot.messages(SHARED, name or "INBOX")

    def received(self, addresses: Iterable[str]) -> dict[str, list[bytes]]:
        return {a: self.dovecot.messages(a) for a in addresses}

    def stopped(self, incarnation: Incarnation) -> None:
        pass

    def resends(self, incarnations: list[Incarnation]) -> Resends:
        """Every copy but the last of an email must be the last one its process sent before a kill."""
        def owner(at: float, pid: int | None) -> int:
            running = [i for i, inc in enumerate(incarnations)
                       if inc.started <= at <= (inc.ended or time.time()) and pid in (None, inc.pid)]
            assert len(running) == 1, f"an email that arrived at {at} was sent by {pid}: no single process ran it"
            return running[0]

        last_of: dict[int, str] = {}
        for at, mid, pid in sorted(self.arrived, key=lambda a: a[0]):
            last_of[owner(at, pid)] = mid
        arrivals: dict[str, list[tuple[float, int | None]]] = defaultdict(list)
        for at, mid, pid in sorted(self.delivered, key=lambda a: a[0]):
            arrivals[mid].append((at, pid))
        self.undelivered = len(self.arrived) - len(self.delivered)
        resent: list[str] = []
        for mid, times in arrivals.items():
            for at, pid in times[:-1]:
                i = owner(at, pid)
                assert incarnations[i].how == "kill", f"{mid} sent again after a clean stop of its first sender"
                assert last_of[i] == mid, f"{mid} sent again, but it was not the last email before the kill"
                resent.append(mid)
        return Resends(copies=resent)


def socket_owner(local_port: int, remote_port: int) -> int | None:
    """The process holding the loopback TCP connection local_port -> remote_port, from /proc."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if (int(cols[1].rsplit(":", 1)[1], 16) == local_port
                    and int(cols[2].rsplit(":", 1)[1], 16) == remote_port):
                inode = cols[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    pids = [pid for pid in os.listdir("/proc") if pid.isdigit()]
    # smartacct processes first, then all others: reading every process's fds takes tens of
    # milliseconds on a busy machine, and the relay answers no one meanwhile.
    daemons = [pid for pid in pids if b"smartacct" in _cmdline(pid)]
    for pid in daemons + [pid for pid in pids if pid not in daemons]:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return int(pid)
            except OSError:
                continue
    return None


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# --------------------------------------------------------------------------- the harness


@dataclass
class Figures:
    """For the README: kills, messages handled, emails (outbox rows) and the copies delivered.

    duplicates = copies - emails: second copies in a mailbox, each a resend of one outbox row
    after a kill between the server's acceptance and the outbox update. With the Maildir
    transport a resend by the same host rewrites the file ("resent" in the summary), so it
    adds no copy.
    """

    kills: int = 0
    kills_with_work_left: int = 0
    kills_before_started: int = 0
    restarts_found_handled: int = 0      # "message.duplicate": committed, not yet filed by the one that handled it
    messages: int = 0
    emails: int = 0
    copies: int = 0
    duplicates: int = 0


@dataclass
class Share:
    """One instance's part of the work, from its log."""

    handled: int         # messages it filed that no other process had handled before
    refiled: int         # "message.duplicate": found handled by another process (or an earlier self)
    skipped: int         # "message.skipped": another instance held the message
    sent: int            # "email.sent"


@dataclass
class Slot:
    """Where one instance runs: its own config file and log; one process at a time."""

    n: int
    config: Path
    log_file: Path
    stderr: IO[bytes]
    host: str = ""                                  # its own host name; "" for the machine's
    proc: subprocess.Popen[bytes] | None = None
    current: Incarnation | None = None

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8") if self.log_file.exists() else ""

    def assert_running(self) -> None:
        """A daemon that exits by itself fails the test, with the end of what it wrote to stderr."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            self.stderr.flush()
            tail = Path(self.stderr.name).read_text(errors="replace")[-3000:]
            raise AssertionError(f"instance {self.n} exited by itself ({code}); {self.stderr.name}:\n{tail}")

    def share(self) -> Share:
        log = self.log()
        filed, found_handled = set(FILED.findall(log)), set(DUPLICATE.findall(log))
        return Share(len(filed - found_handled), log.count(" message.duplicate "),
                     log.count(" message.skipped "), log.count(" email.sent "))


_UNSHARE: list[str] | None = None


def own_host_command(host: str, command: list[str]) -> list[str]:
    """`command` under host name `host` (a UTS namespace of its own), in the same process."""
    global _UNSHARE
    if _UNSHARE is None:
        for candidate in (["unshare", "--uts"], ["unshare", "--user", "--map-root-user", "--uts"]):
            if subprocess.run([*candidate, "hostname", "probe"], check=False, capture_output=True).returncode == 0:
                _UNSHARE = candidate
                break
        else:
            raise AssertionError("instances with host names of their own need unshare(1) with UTS namespaces")
    # sh sets the name, then becomes smartacct: the pid the harness signals is the daemon's.
    return [*_UNSHARE, "sh", "-c", 'hostname "$0" && exec "$@"', host, *command]


class Harness:
    def __init__(self, site: Site, seed: int, instances: int = 1, kills_per_phase: int = 1) -> None:
        self.site = site
        self.install = site.install
        # Ten partners send hundreds of requests at once: the hourly cap per address (tested on its
        # own in test_security) would spread their emails over days.
        no_cap = "max_emails_per_address_per_hour = 0\n"
        extra = self.install.extra_config
        self.install.write_config(extra.replace("[workflow]\n", "[workflow]\n" + no_cap) if "[workflow]" in extra
                                  else extra + "[workflow]\n" + no_cap)
        self.rng = random.Random(seed)              # the scenario: who replies what
        self.kill_rng = random.Random(seed ^ 0x5EED)  # when to kill: apart, so a seed replays the scenario
        self.seed = seed
        self.kills_per_phase = kills_per_phase      # several instances only
        self.figures = Figures()
        self.incarnations: list[Incarnation] = []
        self.delivered = 0
        self.resent = 0
        self.shares: list[Share] = []
        self._owed = 0                               # emails the scenario owes so far
        self._db: Any = None                         # psycopg connection, PostgreSQL only
        self.slots = [self._slot(n, instances) for n in range(instances)]

    def _slot(self, n: int, instances: int) -> Slot:
        root = self.install.root
        if instances == 1:
            return Slot(0, self.install.config, self.install.log_file, open(root / "daemon.stderr", "ab"))
        return Slot(n, root / f"config-{n}.toml", root / f"smartacct-{n}.log", open(root / f"daemon-{n}.stderr", "ab"),
                    host=f"smartacct-{n}" if self.site.own_hosts else "")

    @property
    def db_path(self) -> Path:
        return self.install.root / "var" / "smartacct.db"

    # ------------------------------------------------------------------ the processes

    def _write_config(self, slot: Slot) -> None:
        """The installation's config with the slot's own log file, same everything else."""
        if slot.config == self.install.config:
            return
        text = self.install.config.read_text()
        own = f'file = "{self.install.log_file.name}"'
        assert text.count(own) == 1, f"no single [logging] file line in {self.install.config}"
        slot.config.write_text(text.replace(own, f'file = "{slot.log_file.name}"'))

    def start(self, n: int = 0) -> None:
        slot = self.slots[n]
        assert slot.proc is None
        self._write_config(slot)
        size = slot.log_file.stat().st_size if slot.log_file.exists() else 0
        slot.current = Incarnation(started=time.time(), starts_logged=slot.log().count("daemon.started"),
                                   log_size=size, slot=n, host=slot.host)
        self.incarnations.append(slot.current)
        command = self.install.command("-c", str(slot.config), "run")
        slot.proc = subprocess.Popen(own_host_command(slot.host, command) if slot.host else command,
                                     cwd=self.install.root, env={**os.environ, **self.install.env},
                                     stdout=subprocess.DEVNULL, stderr=slot.stderr)
        slot.current.pid = slot.proc.pid

    def _ended(self, slot: Slot, how: str) -> None:
        assert slot.current is not None
        slot.proc = None
        slot.current.ended = time.time()
        slot.current.how = how
        self.site.stopped(slot.current)

    def kill(self, n: int = 0) -> None:
        slot = self.slots[n]
        assert slot.proc is not None and slot.current is not None
        slot.assert_running()
        slot.proc.send_signal(signal.SIGKILL)
        code = slot.proc.wait()
        assert code == -signal.SIGKILL, \
            f"the daemon exited by itself ({code}) before the kill; see {slot.stderr.name}"
        self.figures.kills += 1
        if slot.log().count("daemon.started") == slot.current.starts_logged:
            self.figures.kills_before_started += 1
        self._ended(slot, "kill")

    def _wait_started(self, n: int = 0, timeout: float = 30) -> None:
        """Until this process logs daemon.started; reads only what the log gained since the start."""
        slot = self.slots[n]
        assert slot.current is not None
        deadline = time.monotonic() + timeout
        wait_for(slot.log_file.exists, timeout)
        with open(slot.log_file, "rb") as fh:
            fh.seek(slot.current.log_size)
            tail = b""
            while b"daemon.started" not in tail:
                assert slot.proc is not None and slot.proc.poll() is None, \
                    f"the daemon exited; see {slot.stderr.name}"
                assert time.monotonic() < deadline, f"no daemon.started after {timeout}s"
                time.sleep(0.005)
                tail = tail[-100:] + fh.read()

    def terminate(self, n: int = 0, timeout: float = 30) -> int:
        slot = self.slots[n]
        assert slot.proc is not None
        slot.assert_running()
        slot.proc.send_signal(signal.SIGTERM)
        code = slot.proc.wait(timeout=timeout)
        self._ended(slot, "term")
        return code

    def close(self) -> None:
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.kill()
                slot.proc.wait()
                slot.proc = None
            slot.stderr.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    def logs(self) -> str:
        """Every instance's log, one after the other."""
        return "".join(slot.log() for slot in self.slots)

    # ------------------------------------------------------------------ the database, read-only

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the installation's database: PostgreSQL when it has a database_url, else its SQLite file
        (args take the database's own placeholder)."""
        if self.install.database_url:
            import psycopg

            if self._db is None:
                self._db = psycopg.connect(self.install.database_url, autocommit=True)
            return self._db.execute(sql, args or None).fetchall()  # type: ignore[no-any-return]
        if not self.db_path.exists():
            return []
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):   # killed before the first migration committed
                return []
            raise
        finally:
            db.close()

    def work_left(self) -> bool:
        unhandled = self.query("SELECT count(*) FROM incoming_message WHERE handled_at IS NULL")
        queued = self.query("SELECT count(*) FROM outbox WHERE state = 'queued'")
        return (self.site.inbox_count() > 0 or bool(unhandled and unhandled[0][0])
                or bool(queued and queued[0][0]))

    def done(self) -> int:
        """Units of work done so far: messages handled plus emails sent."""
        rows = self.query("SELECT (SELECT count(*) FROM incoming_message WHERE handled_at IS NOT NULL)"
                          " + (SELECT count(*) FROM outbox WHERE state = 'sent')")
        return int(rows[0][0]) if rows else 0

    # ------------------------------------------------------------------ phases

    def deliver(self, messages: list[EmailMessage]) -> None:
        self.site.deliver(messages)
        self.delivered += len(messages)

    def phase(self, messages: list[EmailMessage], accounts: list[Account]) -> None:
        """Deliver one phase's mail and run the daemon(s) with kills until it is handled and sent."""
        owed = sum(sum(a.emails().values()) for a in accounts)
        units = len(messages) + owed - self._owed
        self._owed = owed
        base = self.done()   # before the mail arrives: instances still up from the last phase start at once
        self.deliver(messages)
        if len(self.slots) == 1:
            self.run_with_kills()
        else:
            self.run_shared(base, units)

    def run_with_kills(self) -> None:
        """Start, kill after a random delay, restart: until the work is done.

        Most delays count from daemon.started, so that most kills land in the work, however
        long the start takes on a busy machine; the others fall anywhere in the startup.
        """
        while True:
            assert len(self.incarnations) < MAX_INCARNATIONS, "the daemon makes no progress between kills"
            self.start()
            if self.kill_rng.random() < STARTUP_KILLS:
                time.sleep(self.kill_rng.uniform(*STARTUP_KILL_DELAY))
            else:
                self._wait_started()
                time.sleep(self.kill_rng.uniform(*KILL_DELAY))
            self.kill()
            if not self.work_left():
                return
            self.figures.kills_with_work_left += 1

    def run_shared(self, base: int, units: int) -> None:
        """Every instance on the phase's mail at once (those not running start together); then,
        `kills_per_phase` times, one of them chosen at random is SIGKILLed when a random share of
        the phase's `units` of work (messages to handle, emails to send; done() was `base` before)
        is done, and started again."""
        for n, slot in enumerate(self.slots):
            if slot.proc is None:
                self.start(n)
        deadline = time.monotonic() + PHASE_TIMEOUT
        for share in sorted(self.kill_rng.uniform(*KILL_SHARE) for _ in range(self.kills_per_phase)):
            target = base + max(1, round(units * share))
            while self.done() < target and time.monotonic() < deadline:
                self._assert_running()
                time.sleep(0.005)
            victim = self.kill_rng.randrange(len(self.slots))
            self.kill(victim)
            if self.work_left():
                self.figures.kills_with_work_left += 1
            self.start(victim)
        while self.done() < base + units and time.monotonic() < deadline:
            self._assert_running()
            time.sleep(0.02)
        assert self.done() >= base + units, \
            f"after {PHASE_TIMEOUT:g}s, {self.done() - base} of the phase's {units} messages and emails are done"
        wait_for(self._settled, timeout=max(1.0, deadline - time.monotonic()))

    def _assert_running(self) -> None:
        for slot in self.slots:
            slot.assert_running()

    def _settled(self) -> bool:
        """No work left, and every instance still running (one that died fails the test at once)."""
        self._assert_running()
        return not self.work_left()

    def scheduled_checks(self, accounts: list[Account], offset: str = "15d") -> None:
        """Every instance restarted `offset` in the future (Install.offset), all at once:
        with the default windows, 15 days on, requests awaiting confirmation lapse and pending
        ones owe their first reminder (DESIGN §1), each exactly once (DESIGN §4, §8)."""
        for n, slot in enumerate(self.slots):
            if slot.proc is not None:
                self._wait_started(n)
                assert self.terminate(n) == 0
        self.install.offset = offset
        for acct in accounts:
            if acct.state == "awaiting_confirmation":
                acct.replies.append("LAPSE")
            elif acct.state == "pending_acceptance":
                acct.replies.append("REMINDER")
        self.phase([], accounts)

    def finish(self) -> int:
        """One instance: a last, undisturbed run that finds nothing to do. Several: the work done,
        every one stops on SIGTERM. The exit code (the first non-zero one)."""
        if len(self.slots) == 1:
            self.start()
            self._wait_started()
            wait_for(lambda: not self.work_left(), timeout=30)
            return self.terminate()
        wait_for(self._settled, timeout=30)
        running = [n for n, slot in enumerate(self.slots) if slot.proc is not None]
        for n in running:   # one restarted late may still be starting, before its SIGTERM handler
            self._wait_started(n)
        codes = [self.terminate(n) for n in running]
        return next((code for code in codes if code != 0), 0)

    def refs(self, accounts: list[Account]) -> None:
        by_domain = {r["account_domain"]: r["ref"] for r in self.install.requests()}
        for acct in accounts:
            acct.ref = by_domain.get(acct.domain)

    def emails_to(self, accounts: list[Account], address: str, subject_word: str) -> dict[str, Any]:
        """Per account ref, the email whose subject has `subject_word`, as its recipient reads it."""
        found: dict[str, Any] = {}
        mailboxes = self.site.received(sorted({getattr(a, address) for a in accounts}))
        for raws in mailboxes.values():
            for raw in raws:
                sent = as_sent(raw)
                m = SUBJECT_REF.search(sent.subject)
                if m and subject_word in sent.subject:
                    found[m.group(1)] = sent
        missing = [a.ref for a in accounts if a.ref not in found]
        assert not missing, f"no {subject_word!r} email for {missing[:10]} ({len(missing)} in all)"
        return found

    # ------------------------------------------------------------------ the scenario

    def scenario(self, count: int) -> list[Account]:
        """Requests; the partners' CONFIRM or CANCEL; the customers' ACCEPT, DECLINE, or a late CANCEL."""
        accounts = [Account(n) for n in range(count)]
        self.phase([a.request() for a in accounts], accounts)
        self.refs(accounts)
        assert all(a.ref for a in accounts), "a request was not recorded"

        reviews = self.emails_to(accounts, "partner", "Please review")
        answers: list[EmailMessage] = []
        for acct in accounts:
            roll = self.rng.random()
            keyword = "CONFIRM" if roll < 0.5 else "CANCEL" if roll < 0.7 else None
            if keyword is not None:
                assert acct.ref is not None
                answers.append(reply(reviews[acct.ref], keyword))
                acct.replies.append(keyword)
        self.rng.shuffle(answers)
        self.phase(answers, accounts)

        confirmed = [a for a in accounts if a.replies == ["CONFIRM"]]
        activations = self.emails_to(confirmed, "customer", "Please accept")
        completes = self.emails_to(confirmed, "partner", "Confirmed:")
        answers = []
        for acct in confirmed:
            assert acct.ref is not None
            roll = self.rng.random()
            if roll < 0.5:
                answers.append(reply(activations[acct.ref], "ACCEPT", style="outlook"))
                acct.replies.append("ACCEPT")
            elif roll < 0.65:
                answers.append(reply(activations[acct.ref], "DECLINE"))
                acct.replies.append("DECLINE")
            elif roll < 0.8:
                answers.append(reply(completes[acct.ref], "CANCEL"))
                acct.replies.append("CANCEL_PENDING")
        self.rng.shuffle(answers)
        self.phase(answers, accounts)
        return accounts

    # ------------------------------------------------------------------ the verdict

    def check(self, accounts: list[Account]) -> None:
        """DESIGN §4 after the storm: recorded once, everything due delivered, nothing twice, nothing left."""
        f = self.figures
        # Every request recorded exactly once, in the state its replies led to.
        listed = self.install.requests()
        assert len(listed) == len(accounts)
        assert Counter(r["account_domain"] for r in listed) == Counter(a.domain for a in accounts)
        states = {r["account_domain"]: r["state"] for r in listed}
        wrong = {a.domain: (states[a.domain], a.state) for a in accounts if states[a.domain] != a.state}
        assert not wrong, f"(state, expected) per domain: {wrong}"

        # Every message handled once, filed into Processed; nothing left, nothing quarantined.
        assert self.site.inbox_count() == 0
        processed = Counter(message_id_of(raw) for raw in self.site.folder("Processed"))
        filed_twice = [mid for mid, n in processed.items() if n > 1]
        assert not filed_twice, f"{len(filed_twice)} messages filed twice into Processed, e.g. {filed_twice[:3]}"
        assert len(processed) == self.delivered, f"{len(processed)} in Processed of {self.delivered} delivered"
        assert self.site.folder("Rejected") == [] and self.site.folder("Quarantine") == []
        rows = self.query("SELECT handled_at, folder, attempts FROM incoming_message")
        assert len(rows) == self.delivered
        assert all(h is not None and folder == "processed" for h, folder, _ in rows)
        f.messages = len(rows)

        # One outbox row per email due, every one sent.
        outbox = self.query("SELECT o.message_id_hash, o.kind, o.recipient, o.state, o.request_id FROM outbox o")
        by_ref: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
        for _mid, kind, recipient, state, request_id in outbox:
            assert state == "sent", f"outbox row {_mid} is {state}"
            assert request_id is not None, f"an email about no request: {kind} to {recipient}"
            by_ref[f"SA-{request_id:06d}"][(kind, recipient)] += 1
        for acct in accounts:
            assert acct.ref is not None
            assert by_ref.pop(acct.ref, Counter()) == acct.emails(), f"emails of {acct.ref} ({acct.state})"
        assert not by_ref, f"emails about unknown requests: {by_ref}"
        f.emails = len(outbox)

        # In the recipients' mailboxes: each row's Message-ID (stored as its hash), nothing else; per recipient and
        # subject one Message-ID (never a second email for one event); copies only by resending.
        expected: dict[str, set[str]] = defaultdict(set)
        for mid, _kind, recipient, _state, _rid in outbox:
            expected[recipient].add(mid)
        mailboxes = self.site.received({addr for a in accounts for addr in a.addresses})
        copies: Counter[str] = Counter()
        for address, raws in mailboxes.items():
            ids = [message_id_of(raw) for raw in raws]
            assert {message_id_hash(i) for i in ids} == expected.get(address, set()), f"mailbox of {address}"
            copies.update(ids)
            per_subject: dict[str, set[str]] = defaultdict(set)
            for raw, mid in zip(raws, ids):
                per_subject[header_of(raw, "Subject")].add(mid)
            twice = {s: m for s, m in per_subject.items() if len(m) > 1}
            assert not twice, f"{address} got two different emails for one event: {twice}"
        f.copies = sum(copies.values())
        f.duplicates = sum(n - 1 for n in copies.values())
        resends = self.site.resends(self.incarnations)
        extra = Counter({m: n - 1 for m, n in copies.items() if n > 1})
        explained = Counter(resends.copies)
        assert extra == explained, \
            f"copies no kill explains: {extra - explained}; resends not in a mailbox: {explained - extra}"
        assert len(resends.copies) + len(resends.rewrites) <= f.kills

        # The logs: nothing went wrong, and found-handled messages were only refiled.
        log = self.logs()
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert not errors, "\n".join(errors[:20])
        f.restarts_found_handled = log.count("message.duplicate")
        self.resent = len(resends.copies) + len(resends.rewrites)
        self.shares = [slot.share() for slot in self.slots]

    def summary(self, label: str, seconds: float, requests: int) -> str:
        f = self.figures
        return (f"{'crash-safety' if len(self.slots) == 1 else 'instances'} {label}: seed={self.seed} "
                f"requests={requests} messages={f.messages} "
                f"kills={f.kills} (with work left {f.kills_with_work_left}, before daemon.started "
                f"{f.kills_before_started}) refiled={f.restarts_found_handled} emails={f.emails} "
                f"copies={f.copies} duplicates={f.duplicates} resent={self.resent}"
                + (f" data_undelivered={self.site.undelivered}" if isinstance(self.site, ImapSite) else "")
                + ("" if len(self.slots) == 1 else
                   f" instances={len(self.slots)} share(handled/refiled/skipped/sent)="
                   + ",".join(f"{s.handled}/{s.refiled}/{s.skipped}/{s.sent}" for s in self.shares))
                + f" time={seconds:.1f}s")
