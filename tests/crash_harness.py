"""Crash-safety harness (issue 6, item 4; DESIGN §4): `smartacct run` killed at random moments.

A `Harness` drives one installation through phases of incoming mail (requests, then the
partners' and customers' replies), starting the daemon as a subprocess and killing it
with SIGKILL after a random delay, again and again, until the inbox is empty and the
outbox has nothing queued. A `Site` is the mail world around the daemon: the Maildir
backends, or Dovecot + an SMTP relay. The checks at the end read what users see (the
recipients' mailboxes, `requests list --json`, the inbox folders) and the SQLite
database, read-only.

A kill that falls between the transport accepting an email and the outbox recording it
makes the daemon send that outbox row again after the restart (at-least-once delivery):
the same Message-ID twice. Each site keeps the evidence to attribute every such copy to
the kill that caused it.
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
from typing import Any, Iterable, Protocol

from e2e import SMARTACCT, Install, as_sent, good_fields, reply, request_email, wait_for
from servers import Dovecot, SmtpRelay

SHARED = "smart-accounts@example.com"
KILL_DELAY = (0.05, 0.8)        # seconds after the daemon logged daemon.started
STARTUP_KILLS = 0.25            # this share of the kills comes at a random moment of the startup instead
STARTUP_KILL_DELAY = (0.0, 0.7)  # seconds after the process is created
PARTNERS = 10
MAX_INCARNATIONS = 2000         # a daemon that never finishes fails the test, not the machine
SUBJECT_REF = re.compile(r"\[(SA-\d{6,})\]")
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.default)


def message_id_of(raw: bytes) -> str:
    value = str(_HEADERS.parsebytes(raw).get("Message-ID", "")).strip()
    return value[1:-1] if value.startswith("<") and value.endswith(">") else value


def header_of(raw: bytes, name: str) -> str:
    return str(_HEADERS.parsebytes(raw).get(name, ""))


# --------------------------------------------------------------------------- the accounts


@dataclass
class Account:
    """One account domain, its people, and the replies the scenario gives it."""

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
                     "DECLINE": "declined", "CANCEL_PENDING": "cancelled"}[keyword]
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
                due.update([("declined", self.partner)])
            elif keyword == "CANCEL_PENDING":
                due.update([("cancelled_partner", self.partner), ("cancelled_customer", self.customer)])
        return due


# --------------------------------------------------------------------------- sites


@dataclass
class Incarnation:
    """One `smartacct run` process: when it started and how it ended."""

    started: float                  # time.time()
    starts_logged: int              # "daemon.started" lines in the log before this one
    log_size: int                   # bytes in the log before this one
    ended: float = 0.0
    how: str = ""                   # "kill" or "term"


class Site(Protocol):
    install: Install
    replaces_on_resend: bool        # a resend overwrites the first copy instead of adding one

    def deliver(self, messages: list[EmailMessage]) -> None:
        """Put messages in the shared inbox, in order."""

    def inbox_count(self) -> int: ...

    def folder(self, name: str) -> list[bytes]:
        """The messages in the inbox's filing folder `name` ("Processed", …); "" is the inbox."""

    def received(self, addresses: Iterable[str]) -> dict[str, list[bytes]]:
        """Every copy each address received."""

    def stopped(self, incarnation: Incarnation) -> None:
        """The daemon is down: note what the transport shows."""

    def resends(self, incarnations: list[Incarnation]) -> list[str]:
        """Message-IDs written or accepted again; asserts that a kill explains each one."""


class MaildirSite:
    """The embedded default: the inbox and the outgoing Maildir under `install.root/var`.

    An outgoing file is named after its Message-ID, so a resend replaces the file: no
    duplicate can appear, but the rewrite shows as a new inode and mtime.
    """

    replaces_on_resend = True

    def __init__(self, install: Install) -> None:
        self.install = install
        self._snapshot: dict[str, tuple[int, int]] = {}
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

    def stopped(self, incarnation: Incarnation) -> None:
        now: dict[str, tuple[int, int]] = {}
        for path in (self.install.outbox / "new").glob("*"):
            st = path.stat()
            now[path.name] = (st.st_ino, st.st_mtime_ns)
        newest = max((sig[1] for sig in self._snapshot.values()), default=0)
        for name, old in self._snapshot.items():
            if name in now and now[name] != old:
                # Rewritten after a restart: it must be the last file written before the kill,
                # whose outbox row the dead process never marked sent.
                assert old[1] == newest, f"{name} rewritten, but it was not the last email before a kill"
                self._rewrites.append(name)
        self._snapshot = now

    def resends(self, incarnations: list[Incarnation]) -> list[str]:
        return list(self._rewrites)


class ImapSite:
    """Dovecot for every mailbox and the aiosmtpd relay that delivers into it over LMTP.

    The relay's DATA hook is wrapped to note when each email reached it, so every
    duplicate can be traced to the process that sent the first copy.
    """

    replaces_on_resend = False

    def __init__(self, install: Install, dovecot: Dovecot, relay: SmtpRelay) -> None:
        self.install = install
        self.dovecot = dovecot
        self.relay = relay
        self.arrived: list[tuple[float, str]] = []     # (time the DATA arrived, Message-ID)
        self.delivered: list[tuple[float, str]] = []   # the same, once the copy is in the mailbox
        self._arrival: dict[int, float] = {}
        self.undelivered = 0
        handler = relay.handler
        handle_data, deliver = handler.handle_DATA, handler._deliver

        async def handle_DATA(server: Any, session: Any, envelope: Any) -> str:
            data = envelope.original_content or b""
            self._arrival[id(data)] = time.time()
            self.arrived.append((self._arrival[id(data)], message_id_of(data)))
            return await handle_data(server, session, envelope)  # type: ignore[no-any-return]

        def _deliver(mail_from: str, rcpts: list[str], data: bytes) -> None:
            # When the sender dies before the answer, aiosmtpd cancels handle_DATA: a delivery
            # already started completes all the same, one not yet started never happens.
            deliver(mail_from, rcpts, data)
            self.delivered.append((self._arrival.pop(id(data)), message_id_of(data)))

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

    def resends(self, incarnations: list[Incarnation]) -> list[str]:
        """Every copy but the last of an email must be the last one its process sent before a kill."""
        def owner(at: float) -> int:
            return next(i for i, inc in enumerate(incarnations) if inc.started <= at <= inc.ended)

        last_of: dict[int, str] = {}
        for at, mid in sorted(self.arrived):
            last_of[owner(at)] = mid
        arrivals: dict[str, list[float]] = defaultdict(list)
        for at, mid in sorted(self.delivered):
            arrivals[mid].append(at)
        self.undelivered = len(self.arrived) - len(self.delivered)
        resent: list[str] = []
        for mid, times in arrivals.items():
            for at in times[:-1]:
                i = owner(at)
                assert incarnations[i].how == "kill", f"{mid} sent again after a clean stop"
                assert last_of[i] == mid, f"{mid} sent again, but it was not the last email before the kill"
                resent.append(mid)
        return resent


# --------------------------------------------------------------------------- the harness


@dataclass
class Figures:
    """For the README: kills, messages handled, emails (outbox rows) and the copies delivered.

    duplicates = copies - emails: second copies in a mailbox, each a resend of one outbox row
    after a kill between the server's acceptance and the outbox update. With the Maildir
    transport a resend rewrites the file ("resent" in the summary), so it adds no copy.
    """

    kills: int = 0
    kills_with_work_left: int = 0
    kills_before_started: int = 0
    restarts_found_handled: int = 0      # "message.duplicate": committed, not yet filed when killed
    messages: int = 0
    emails: int = 0
    copies: int = 0
    duplicates: int = 0


class Harness:
    def __init__(self, site: Site, seed: int) -> None:
        self.site = site
        self.install = site.install
        self.rng = random.Random(seed)              # the scenario: who replies what
        self.kill_rng = random.Random(seed ^ 0x5EED)  # when to kill: apart, so a seed replays the scenario
        self.seed = seed
        self.figures = Figures()
        self.incarnations: list[Incarnation] = []
        self.delivered = 0
        self.resent = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr = open(self.install.root / "daemon.stderr", "ab")

    @property
    def db_path(self) -> Path:
        return self.install.root / "var" / "smartacct.db"

    # ------------------------------------------------------------------ the process

    def start(self) -> None:
        assert self._proc is None
        log = self.install.log_file
        size = log.stat().st_size if log.exists() else 0
        self.incarnations.append(Incarnation(started=time.time(), starts_logged=self.install.log().count(
            "daemon.started"), log_size=size))
        self._proc = subprocess.Popen([SMARTACCT, "-c", str(self.install.config), "run"], cwd=self.install.root,
                                      env={**os.environ, **self.install.env}, stdout=subprocess.DEVNULL,
                                      stderr=self._stderr)

    def _ended(self, how: str) -> None:
        self._proc = None
        self.incarnations[-1].ended = time.time()
        self.incarnations[-1].how = how
        self.site.stopped(self.incarnations[-1])

    def kill(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        code = self._proc.wait()
        assert code == -signal.SIGKILL, f"the daemon exited by itself ({code}) before the kill; see daemon.stderr"
        self.figures.kills += 1
        if self.install.log().count("daemon.started") == self.incarnations[-1].starts_logged:
            self.figures.kills_before_started += 1
        self._ended("kill")

    def _wait_started(self, timeout: float = 30) -> None:
        """Until this process logs daemon.started; reads only what the log gained since the start."""
        deadline = time.monotonic() + timeout
        wait_for(self.install.log_file.exists, timeout)
        with open(self.install.log_file, "rb") as fh:
            fh.seek(self.incarnations[-1].log_size)
            tail = b""
            while b"daemon.started" not in tail:
                assert self._proc is not None and self._proc.poll() is None, "the daemon exited; see daemon.stderr"
                assert time.monotonic() < deadline, f"no daemon.started after {timeout}s"
                time.sleep(0.005)
                tail = tail[-100:] + fh.read()

    def terminate(self, timeout: float = 30) -> int:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        code = self._proc.wait(timeout=timeout)
        self._ended("term")
        return code

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        self._stderr.close()

    # ------------------------------------------------------------------ the database, read-only

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
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

    # ------------------------------------------------------------------ phases

    def deliver(self, messages: list[EmailMessage]) -> None:
        self.site.deliver(messages)
        self.delivered += len(messages)

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

    def finish(self) -> int:
        """A last, undisturbed run that finds nothing to do; SIGTERM; the exit code."""
        self.start()
        self._wait_started()
        wait_for(lambda: not self.work_left(), timeout=30)
        return self.terminate()

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
        self.deliver([a.request() for a in accounts])
        self.run_with_kills()
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
        self.deliver(answers)
        self.run_with_kills()

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
        self.deliver(answers)
        self.run_with_kills()
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
        assert len(self.site.folder("Processed")) == self.delivered
        assert self.site.folder("Rejected") == [] and self.site.folder("Quarantine") == []
        rows = self.query("SELECT handled_at, folder, attempts FROM incoming_message")
        assert len(rows) == self.delivered
        assert all(h is not None and folder == "processed" for h, folder, _ in rows)
        f.messages = len(rows)

        # One outbox row per email due, every one sent.
        outbox = self.query("SELECT o.message_id, o.kind, o.recipient, o.state, o.request_id FROM outbox o")
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

        # In the recipients' mailboxes: each row's Message-ID, nothing else; per recipient and
        # subject one Message-ID (never a second email for one event); copies only by resending.
        expected: dict[str, set[str]] = defaultdict(set)
        for mid, _kind, recipient, _state, _rid in outbox:
            expected[recipient].add(mid)
        mailboxes = self.site.received({addr for a in accounts for addr in a.addresses})
        copies: Counter[str] = Counter()
        for address, raws in mailboxes.items():
            ids = [message_id_of(raw) for raw in raws]
            assert set(ids) == expected.get(address, set()), f"mailbox of {address}"
            copies.update(ids)
            per_subject: dict[str, set[str]] = defaultdict(set)
            for raw, mid in zip(raws, ids):
                per_subject[header_of(raw, "Subject")].add(mid)
            twice = {s: m for s, m in per_subject.items() if len(m) > 1}
            assert not twice, f"{address} got two different emails for one event: {twice}"
        f.copies = sum(copies.values())
        f.duplicates = sum(n - 1 for n in copies.values())
        resent = self.site.resends(self.incarnations)
        extra = Counter({m: n - 1 for m, n in copies.items() if n > 1})
        explained = Counter() if self.site.replaces_on_resend else Counter(resent)
        assert extra == explained, \
            f"copies no kill explains: {extra - explained}; resends not in a mailbox: {explained - extra}"
        assert len(resent) <= f.kills

        # The log: nothing went wrong, and found-handled messages were only refiled.
        log = self.install.log()
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert not errors, "\n".join(errors[:20])
        f.restarts_found_handled = log.count("message.duplicate")
        self.resent = len(resent)

    def summary(self, label: str, seconds: float, requests: int) -> str:
        f = self.figures
        return (f"crash-safety {label}: seed={self.seed} requests={requests} messages={f.messages} "
                f"kills={f.kills} (with work left {f.kills_with_work_left}, before daemon.started "
                f"{f.kills_before_started}) refiled={f.restarts_found_handled} emails={f.emails} "
                f"copies={f.copies} duplicates={f.duplicates} resent={self.resent}"
                + (f" data_undelivered={self.site.undelivered}" if isinstance(self.site, ImapSite) else "")
                + f" time={seconds:.1f}s")
