"""End-to-end helpers: a smartacct installation in a temp dir, driven through its CLI.

Mail goes in as files in the inbox Maildir, the CLI's entry point runs in this process
(`Install.cli`: `daemon.ops.cli.main(argv, clock=...)`, as the `smartacct` executable
calls it), the long-running daemon as a real subprocess (`Daemon`), and the tests read
what a user would see: the emails in the outgoing Maildir, the folder a message was
filed in, `requests list --json`, the log.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import email.utils
import io
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from daemon import log as daemon_log
from daemon.clock import Clock, OffsetClock
from daemon.config import parse_duration
from daemon.ops import cli as daemon_cli
from models.base import database_proxy

T = TypeVar("T")

SMARTACCT = str(Path(sys.executable).parent / "smartacct")
LAUNCH = str(Path(__file__).with_name("launch.py"))   # the same main(), in the future (`Install.offset`)
TOKEN_FOOTER = re.compile(r"Ref: (SA-\d{6,}) · Code: ([a-z2-7]{26})")
OUR_ADDRESS = "smart-accounts@example.com"


@dataclass
class Sent:
    """One email the daemon wrote to the outgoing Maildir."""

    path: Path
    msg: EmailMessage

    @property
    def to(self) -> str:
        return email.utils.parseaddr(str(self.msg["To"]))[1]

    @property
    def subject(self) -> str:
        return str(self.msg["Subject"])

    @property
    def text(self) -> str:
        part = self.msg.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""

    @property
    def html(self) -> str:
        part = self.msg.get_body(preferencelist=("html",))
        return part.get_content() if part is not None else ""

    @property
    def token(self) -> str | None:
        m = TOKEN_FOOTER.search(self.text)
        return m.group(2) if m else None


@dataclass
class Install:
    root: Path
    extra_config: str = ""
    database_url: str | None = None      # None: SQLite under var/
    backends: str = ('[mailbox]\nbackend = "maildir"\npath = "var/inbox"\n'
                     '[smtp]\nbackend = "maildir"\npath = "var/outbox"\n')
    env: dict[str, str] = field(default_factory=dict)
    offset: str | None = None            # "91d": every CLI call and daemon from now on runs that far ahead
    _counter: int = 0
    _seen: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.write_config()

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def inbox(self) -> Path:
        return self.root / "var" / "inbox"

    @property
    def outbox(self) -> Path:
        return self.root / "var" / "outbox"

    @property
    def log_file(self) -> Path:
        return self.root / "smartacct.log"

    def write_config(self, extra: str | None = None) -> None:
        if extra is not None:
            self.extra_config = extra
        workflow = self.extra_config if self.extra_config.endswith("\n") or not self.extra_config \
            else self.extra_config + "\n"
        if "partner_domains" not in workflow:   # required (DESIGN §5): the partners the tests write as
            domains = 'partner_domains = ["partner.example"]\n'
            workflow = workflow.replace("[workflow]\n", "[workflow]\n" + domains) if "[workflow]" in workflow \
                else workflow + "[workflow]\n" + domains
        self.config.write_text(
            self.backends + f'[database]\nurl = "{self.database_url or "sqlite:///var/smartacct.db"}"\n'
            f'[logging]\nfile = "smartacct.log"\n{workflow}'
        )

    # --- mail in -------------------------------------------------------------------------------

    def drop(self, raw: bytes | EmailMessage, name: str | None = None) -> str:
        """Deliver a message into the inbox Maildir as an MDA would (tmp/, then rename into new/)."""
        data = raw.as_bytes(policy=email.policy.SMTP) if isinstance(raw, EmailMessage) else raw
        self._counter += 1
        name = name or f"{int(time.time())}.M{self._counter}P{os.getpid()}.test"
        for sub in ("tmp", "new", "cur"):
            (self.inbox / sub).mkdir(parents=True, exist_ok=True)
        tmp = self.inbox / "tmp" / name
        tmp.write_bytes(data)
        tmp.rename(self.inbox / "new" / name)
        return name

    def folder_of(self, name: str) -> str | None:
        """Where a dropped message is now: "inbox", "Processed", "Rejected", "Quarantine" or None."""
        for folder in ("Processed", "Rejected", "Quarantine"):
            if any(p.name.split(":2,")[0] == name for p in (self.inbox / f".{folder}" / "cur").glob("*")):
                return folder
        if (self.inbox / "new" / name).exists() or (self.inbox / "cur" / name).exists():
            return "inbox"
        return None

    # --- the CLI -------------------------------------------------------------------------------

    @property
    def clock(self) -> Clock | None:
        """The clock of the installation's processes: the system's, or `offset` ahead of it."""
        return OffsetClock(parse_duration(self.offset)) if self.offset else None

    def command(self, *args: str) -> list[str]:
        """The argv that runs `smartacct ARGS` as a process of its own: the real executable, or,
        with an offset, tests/launch.py, which calls the same main() with an OffsetClock."""
        return [sys.executable, LAUNCH, self.offset, *args] if self.offset else [SMARTACCT, *args]

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`smartacct -c config.toml ARGS` by its entry point, in this process, as the executable
        would run it: in the install's root with its environment overlay, on its clock. `timeout`
        is for the calls that once were subprocesses; nothing in process can be cut off."""
        argv = ["-c", str(self.config), *args]
        with in_process(self.env, self.root) as (out, err):
            code = daemon_cli.main(argv, clock=self.clock)
        proc = subprocess.CompletedProcess(["smartacct", *argv], code, out.getvalue(), err.getvalue())
        if check and proc.returncode != 0:
            raise AssertionError(f"smartacct {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def run_once(self, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.cli("run", "--once", **kw)

    def requests(self, *args: str) -> list[dict[str, Any]]:
        return json.loads(self.cli("requests", "list", "--json", *args).stdout)  # type: ignore[no-any-return]

    def show(self, ref: str) -> dict[str, Any]:
        return json.loads(self.cli("requests", "show", ref, "--json").stdout)  # type: ignore[no-any-return]

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Read the installation's database directly, whichever it is."""
        if self.database_url:
            import psycopg

            with psycopg.connect(self.database_url) as conn:
                return conn.execute(sql).fetchall()  # type: ignore[arg-type]
        with sqlite3.connect(self.root / "var" / "smartacct.db") as db:
            return db.execute(sql).fetchall()

    def query_write(self, sql: str) -> None:
        """Change the installation's database directly (what a crash or an admin left behind)."""
        if self.database_url:
            import psycopg

            with psycopg.connect(self.database_url, autocommit=True) as conn:
                conn.execute(sql)  # type: ignore[arg-type]
            return
        with sqlite3.connect(self.root / "var" / "smartacct.db") as db:
            db.executescript(sql)

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8") if self.log_file.exists() else ""

    # --- mail out ------------------------------------------------------------------------------

    def sent(self) -> list[Sent]:
        """Every email written so far, oldest first."""
        files = sorted((self.outbox / "new").glob("*"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [Sent(p, _parse(p.read_bytes())) for p in files]

    def new_sent(self) -> list[Sent]:
        """Emails written since the last call."""
        fresh = [s for s in self.sent() if s.path not in self._seen]
        self._seen.update(s.path for s in fresh)
        return fresh


_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPROF)


@contextlib.contextmanager
def in_process(env: Mapping[str, str], cwd: Path) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """One CLI call in this process, isolated as a process of its own would be: the environment
    overlay (over this one's, less $SMARTACCT_CONFIG), the working folder, the umask, stdout and stderr, the
    smartacct logger, the database the models are bound to and the signal handlers are each
    restored afterwards, and the call's log handler closed, so its log file is complete."""
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_umask = os.umask(0o022)
    os.umask(saved_umask)
    logger = logging.getLogger(daemon_log.LOGGER_NAME)
    saved_log = (list(logger.handlers), logger.level, logger.propagate)
    saved_db = database_proxy.obj
    saved_signals = {s: signal.getsignal(s) for s in _SIGNALS}
    for handler in saved_log[0]:
        logger.removeHandler(handler)   # so that log.setup() in the call does not close them
    out, err = io.StringIO(), io.StringIO()
    os.environ.pop("SMARTACCT_CONFIG", None)   # the caller's own; `env` may set one
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        for handler in saved_log[0]:
            logger.addHandler(handler)
        logger.setLevel(saved_log[1])
        logger.propagate = saved_log[2]
        database_proxy.initialize(saved_db)
        for s, handler in saved_signals.items():
            if handler is not None:
                signal.signal(s, handler)
        signal.setitimer(signal.ITIMER_PROF, 0)
        os.chdir(saved_cwd)
        os.umask(saved_umask)
        os.environ.clear()
        os.environ.update(saved_env)


def wait_for(probe: Callable[[], T], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {probe}")
        time.sleep(0.05)


class Daemon:
    """`smartacct run` as a long-running subprocess."""

    def __init__(self, install: Install) -> None:
        self.install = install
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        starts = self.install.log().count("daemon.started")
        self.proc = subprocess.Popen(self.install.command("-c", str(self.install.config), "run"), cwd=self.install.root,
                                     env={**os.environ, **self.install.env}, text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.install.log().count("daemon.started") > starts)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=15)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def table(text: str) -> list[dict[str, str]]:
    """The rows of a table the CLI printed (a header, then columns two or more spaces apart; no
    value holds two spaces in a row), as dicts by header."""
    header, *lines = text.splitlines()
    names = re.split(r"\s{2,}", header.strip())
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines]
    assert all(len(row) == len(names) for row in rows), (names, rows)
    return [dict(zip(names, row)) for row in rows]


def as_sent(raw: bytes) -> Sent:
    """An email read from a real mailbox, for reply()."""
    return Sent(Path("imap"), _parse(raw))


def _parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


# --- mail as people write it -----------------------------------------------------------------------

def request_email(fields: dict[str, str], *, sender: str = "paula@partner.example", lang: str = "en",
                  message_id: str | None = None, subject: str = "Smart Account request") -> EmailMessage:
    labels = EN_LABELS if lang == "en" else DE_LABELS
    body = "Hello,\n\nplease create this account:\n\n" + "".join(
        f"{labels[k]}: {v}\n" for k, v in fields.items()) + "\nThanks\n-- \nPaula Partner\nPartner Networks\n"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = OUR_ADDRESS
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = message_id or email.utils.make_msgid(domain=sender.rpartition("@")[2])
    msg.set_content(body)
    return msg


EN_LABELS = {"account_name": "Account Name", "customer_email": "Customer Email", "account_domain": "Account Domain",
             "note_to_customer": "Note to Customer", "user_emails": "User Emails",
             "note_to_users": "Note to Added Users", "language": "Language"}
DE_LABELS = {"account_name": "Kontoname", "customer_email": "Kunden-E-Mail", "account_domain": "Kontodomäne",
             "note_to_customer": "Hinweis für den Kunden", "user_emails": "Benutzer-E-Mails",
             "note_to_users": "Hinweis für hinzugefügte Benutzer", "language": "Sprache"}


def good_fields(domain: str = "acme.example", **over: str) -> dict[str, str]:
    fields = {"account_name": "Acme Robotics", "customer_email": f"carla@{domain}", "account_domain": domain,
              "note_to_customer": "Please accept soon.", "user_emails": f"dev1@{domain}, dev2@{domain}",
              "note_to_users": "Licences are under Inventory."}
    fields.update(over)
    return fields


def reply(original: Sent, keyword: str, *, sender: str | None = None, style: str = "gmail",
          lang: str = "en", html: bool = False, to: str | None = None) -> EmailMessage:
    """A reply as mainstream clients write it: Re:/AW: subject, threading headers, the original quoted."""
    sender = sender or original.to
    date = email.utils.format_datetime(email.utils.parsedate_to_datetime(str(original.msg["Date"])))
    quoted = "\n".join("> " + line for line in original.text.splitlines())
    if style == "gmail":
        header = f"On {date}, Smart Accounts <{OUR_ADDRESS}> wrote:" if lang == "en" else \
            f"Am {date} schrieb Smart Accounts <{OUR_ADDRESS}>:"
        body = f"{keyword}\n\n{header}\n{quoted}\n"
    elif style == "bottom":
        header = f"On {date}, Smart Accounts <{OUR_ADDRESS}> wrote:"
        body = f"{header}\n{quoted}\n\n{keyword}\n\n-- \n{sender}\n"
    else:  # outlook: top-posted, the original below a header block, not prefixed with ">"
        if lang == "de":
            header = (f"-----Ursprüngliche Nachricht-----\nVon: Smart Accounts <{OUR_ADDRESS}>\n"
                      f"Gesendet: {date}\nAn: {sender}\nBetreff: {original.subject}\n")
        else:
            header = (f"-----Original Message-----\nFrom: Smart Accounts <{OUR_ADDRESS}>\nSent: {date}\n"
                      f"To: {sender}\nSubject: {original.subject}\n")
        body = f"{keyword}\n\n{header}\n{original.text}\n"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to or str(original.msg["Reply-To"] or original.msg["From"])
    msg["Subject"] = ("AW: " if lang == "de" else "Re: ") + original.subject
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    msg["In-Reply-To"] = str(original.msg["Message-ID"])
    msg["References"] = " ".join(filter(None, [str(original.msg.get("References") or ""),
                                               str(original.msg["Message-ID"])])).strip()
    if html:
        quoted_html = original.html or "<p>" + original.text.replace("\n", "<br>") + "</p>"
        msg.set_content(f'<div dir="ltr">{keyword}</div><br><div class="gmail_quote">'
                        f'<div class="gmail_attr">On {date} Smart Accounts wrote:</div>'
                        f'<blockquote class="gmail_quote">{quoted_html}</blockquote></div>', subtype="html")
    else:
        msg.set_content(body)
    return msg
