"""Real mail servers for the tests: Dovecot (IMAP, IMAPS, LMTP) and an aiosmtpd relay.

Each server listens on a free loopback port with its config and data in a temp dir
and is stopped when its scope ends, also when a test fails. A pytest plugin:
tests/conftest.py loads it.

- `dovecot`: one Dovecot for the whole session, handed to each test clean: no users,
  no mail, its log read from where the test began (`Dovecot.reset`). A test creates
  the mailbox users it needs (`add_user`), so tests cannot see each other's mail.
  The shared server refuses stop()/start()/kill(): a test that takes Dovecot down to
  simulate an outage is marked `@pytest.mark.private_dovecot` and gets a server of
  its own for that test (every fixture built on `dovecot` then uses it too).
- `smtp_server`: a relay that delivers what it accepts into Dovecot over LMTP, for
  tests that read what a customer received over IMAP (issue 5, item 3).
- `smtp_sink`: the same relay without Dovecot, for tests that only look at what it
  accepted (`received`, `connections`) and never read a mailbox.

Relays are per test (one starts in milliseconds), so what a test injects with
`fail_next`/`refuse` and what it `received` never outlives the test.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from imapclient import IMAPClient

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers on {HOST}:{port} after {timeout}s") from None
            time.sleep(0.02)


@dataclass(frozen=True)
class TlsCert:
    """A self-signed certificate for localhost and 127.0.0.1; `cafile` trusts it."""

    certfile: Path
    keyfile: Path

    @property
    def cafile(self) -> Path:
        return self.certfile

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cafile))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.certfile), str(self.keyfile))
        return ctx


def make_cert(directory: Path) -> TlsCert:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return TlsCert(cert, key)


# --------------------------------------------------------------------------- Dovecot

_DOVECOT_CONF = """\
# Written by tests/servers.py for one test session; nothing here is shared with the system.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
default_internal_user = {internal_user}
default_login_user = {login_user}
first_valid_uid = {first_valid_uid}
auth_mechanisms = plain login xoauth2
auth_failure_delay = 0
disable_plaintext_auth = no
ssl = yes
ssl_cert = <{certfile}
ssl_key = <{keyfile}
ssl_dh =
ssl_cipher_list = ECDHE+AESGCM:ECDHE+CHACHA20
mail_location = maildir:~/Maildir
# A throwaway server in a temp dir: no fsync per delivery (a process kill loses nothing either way).
mail_fsync = never
recipient_delimiter = +
lmtp_save_to_detail_mailbox = no
imap_idle_notify_interval = 2 mins
mailbox_idle_check_interval = 1 secs
login_trusted_networks = 127.0.0.0/8
shutdown_clients = yes
# One passwd file per user: Dovecot reads a new one at once, whereas it re-reads a changed
# single file at most once a second (a user added right after another test's logins would
# not be found yet), and it does not remember a missing one.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
# Dovecot's high-performance mode: login processes serve many connections, and an imap process
# serves one session after another instead of a new one starting for each login (all users
# share one uid). A login then takes milliseconds, and tests poll mailboxes by logging in.
service imap {{
  service_count = 1000
  process_min_avail = 2
}}
service imap-login {{
  service_count = 0
  process_min_avail = 1
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
# No auth penalty: after a failed login Dovecot would delay every next login from 127.0.0.1
# by up to 15 s, also another test's on the shared server (tests of wrong passwords do this).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


class Dovecot:
    """One Dovecot: IMAP (plain + STARTTLS), IMAPS and LMTP on loopback ports.

    `shared` (the session's server): stop(), start() and kill() are refused, so that no
    test takes it away from the ones after it, and reset() hands it clean to the next test.
    """

    def __init__(self, root: Path, cert: TlsCert, *, shared: bool = False) -> None:
        self.root = root
        self.cert = cert
        self.shared = shared
        self.host = HOST
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.lmtp_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._passwords: dict[str, str] = {}
        self._log_start = 0           # where the current test's part of the log begins
        me = pwd.getpwuid(os.geteuid())
        if os.geteuid() == 0:
            # Dovecot never touches mail as root: virtual users' mail belongs to nobody.
            nobody = pwd.getpwnam("nobody")
            self._uid, self._gid = nobody.pw_uid, nobody.pw_gid
            internal, login, first_uid = "dovecot", "dovenull", 100
        else:
            self._uid, self._gid = me.pw_uid, me.pw_gid
            internal = login = me.pw_name
            first_uid = min(me.pw_uid, 500)
        (root / "mail").mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        os.chown(root / "mail", self._uid, self._gid)
        (root / "users").mkdir(exist_ok=True)
        os.chmod(root / "users", 0o755)
        self.conf = root / "dovecot.conf"
        self.conf.write_text(_DOVECOT_CONF.format(
            root=root, certfile=cert.certfile, keyfile=cert.keyfile,
            imap_port=self.imap_port, imaps_port=self.imaps_port, lmtp_port=self.lmtp_port,
            internal_user=internal, login_user=login, first_valid_uid=first_uid,
        ))

    @property
    def cafile(self) -> Path:
        return self.cert.cafile

    @property
    def log(self) -> str:
        """What Dovecot logged since the test began."""
        path = self.root / "dovecot.log"
        if not path.exists():
            return ""
        with open(path, "rb") as fh:
            fh.seek(self._log_start)
            return fh.read().decode(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 5) -> None:
        """Dovecot's log process writes a moment later than the event."""
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the Dovecot log:\n{self.log[-2000:]}")
            time.sleep(0.02)

    def _refuse_if_shared(self, what: str) -> None:
        if self.shared:
            raise RuntimeError(f"Dovecot.{what}() on the session's shared server would break the tests after "
                               "this one: mark the test @pytest.mark.private_dovecot")

    def start(self) -> None:
        self._refuse_if_shared("start")
        self._start()

    def _start(self) -> None:
        if self._proc is not None:
            return
        self._proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "dovecot.stderr", "ab"),
            start_new_session=True,   # its own process group: kill() reaches every child
        )
        try:
            for port in (self.imap_port, self.imaps_port, self.lmtp_port):
                wait_for_port(port)
        except RuntimeError:
            self._kill()
            raise RuntimeError(f"dovecot did not start:\n{self.log}\n"
                               f"{(self.root / 'dovecot.stderr').read_text(errors='replace')}") from None

    def kill(self) -> None:
        """Kill the server and every child at once: fixture teardown, no graceful wait."""
        self._refuse_if_shared("kill")
        self._kill()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop(self) -> None:
        """Stop the server and its children as an admin would; the mail stays for start()."""
        self._refuse_if_shared("stop")
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # The whole group: Dovecot's master leaves running imap processes behind otherwise,
        # and a restart that keeps client connections alive would test nothing.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # stragglers
        except ProcessLookupError:
            pass
        # The master removes its pid file; wait until the listeners are really gone.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _answers(self.imap_port):
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        return self._proc is not None

    def add_user(self, address: str, password: str = "secret") -> None:
        home = self.root / "mail" / address
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, self._uid, self._gid)
        self._passwords[address] = password
        entry = self.root / "users" / address
        tmp = entry.with_name(f".{address}.tmp")
        tmp.write_text(f"{address}:{{PLAIN}}{password}:{self._uid}:{self._gid}::{home}::\n")
        tmp.rename(entry)   # never half a line for an auth lookup to read

    def reset(self, timeout: float = 10) -> None:
        """Clean for the next test: no users, no mail, the log read from here on.

        First waits until no IMAP session of the last test is left (a killed client's
        server process may still finish its command), so that none of its mail can
        land in the next test's mailboxes.
        """
        if self._proc is None or self._proc.poll() is not None:   # died: a new one, same ports
            self._proc = None
            self._start()
        deadline = time.monotonic() + timeout
        while self._sessions():
            if time.monotonic() > deadline:
                raise RuntimeError(f"IMAP sessions still open after {timeout}s:\n{self._sessions()}")
            time.sleep(0.01)
        for entry in (self.root / "users").iterdir():
            entry.unlink()
        for home in (self.root / "mail").iterdir():
            shutil.rmtree(home)
        self._passwords.clear()
        log = self.root / "dovecot.log"
        self._log_start = log.stat().st_size if log.exists() else 0

    def _sessions(self) -> str:
        """`doveadm who`: the users logged in over IMAP right now, one line each ("" if none)."""
        proc = subprocess.run(["doveadm", "-c", str(self.conf), "who", "-1"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"doveadm who failed: {proc.stderr}")
        return "\n".join(line for line in proc.stdout.splitlines()[1:] if line.strip())

    def imap_client(self, user: str) -> IMAPClient:
        client = IMAPClient(self.host, self.imap_port, ssl=False, timeout=10)
        client.login(user, self._passwords[user])
        return client

    def messages(self, user: str, folder: str = "INBOX") -> list[bytes]:
        with self.imap_client(user) as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            data = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
        return [data[uid][b"BODY[]"] for uid in sorted(data)]

    def folders(self, user: str) -> list[str]:
        with self.imap_client(user) as client:
            names = [name for _flags, _delim, name in client.list_folders()]
        return sorted(names)

    def deliver(self, user: str, raw: bytes, sender: str = "sender@example.net") -> None:
        """Put a message in `user`'s INBOX the way an MTA would: over LMTP."""
        with smtplib.LMTP(self.host, self.lmtp_port, timeout=10) as lmtp:
            lmtp.sendmail(sender, [user], raw)

    def deliver_many(self, user: str, raws: list[bytes], sender: str = "sender@example.net") -> None:
        """Several messages over one LMTP connection, in order."""
        with smtplib.LMTP(self.host, self.lmtp_port, timeout=30) as lmtp:
            for raw in raws:
                lmtp.sendmail(sender, [user], raw)

    def wait_for(self, user: str, count: int, folder: str = "INBOX", timeout: float = 10) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(user, folder)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{user} has {len(found)} messages in {folder}, expected {count}")
            time.sleep(0.05)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- SMTP relay


@dataclass
class _Refusal:
    code: int
    text: str
    remaining: int | None     # None: for every message


@dataclass
class RelayHandler:
    """aiosmtpd handler: accepts, refuses on request, and delivers over LMTP."""

    dovecot: Dovecot | None
    username: str
    password: str
    oauth2_token: str
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    connections: int = 0
    auth_logins: list[tuple[str, str]] = field(default_factory=list)   # (mechanism, user)
    auth_attempts: int = 0                                               # AUTH commands, refused ones too
    _next: list[_Refusal] = field(default_factory=list)
    _recipients: dict[str, _Refusal] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _delivering: int = 0      # LMTP deliveries under way (they go on after a client died)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        with self._lock:
            refusal = self._recipients.get(address.lower())
        if refusal is not None:
            return f"{refusal.code} {refusal.text}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            refusal = self._next[0] if self._next else None
            if refusal is not None and refusal.remaining is not None:
                refusal.remaining -= 1
                if refusal.remaining <= 0:
                    self._next.pop(0)
        if refusal is not None:
            return f"{refusal.code} {refusal.text}"
        data = envelope.original_content or b""
        rcpts = list(envelope.rcpt_tos)
        if self.dovecot is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, self._deliver, envelope.mail_from, rcpts, data)
            except (smtplib.SMTPException, OSError) as exc:
                return f"451 4.3.0 local delivery failed: {exc}"
        with self._lock:
            self.received.append((envelope.mail_from, rcpts, data))
        return "250 2.0.0 Message accepted"

    def _deliver(self, mail_from: str, rcpts: list[str], data: bytes) -> None:
        assert self.dovecot is not None
        with self._lock:
            self._delivering += 1
        try:
            with smtplib.LMTP(self.dovecot.host, self.dovecot.lmtp_port, timeout=10) as lmtp:
                lmtp.sendmail(mail_from, rcpts, data)
        finally:
            with self._lock:
                self._delivering -= 1

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """RFC-less but common: base64("user=U\\x01auth=Bearer T\\x01\\x01")."""
        self.auth_attempts += 1
        if len(args) > 1:                       # ["XOAUTH2", initial response]
            blob = args[1].encode()
        else:
            blob = await server.challenge_auth("", encode_to_b64=False)
            if blob is None:
                return AuthResult(success=False, handled=False)
        try:
            text = base64.b64decode(blob).decode()
            fields = dict(part.split("=", 1) for part in text.split("\x01") if part)
        except (ValueError, UnicodeDecodeError):
            return AuthResult(success=False, handled=False)
        ok = fields.get("auth") == f"Bearer {self.oauth2_token}" and fields.get("user") == self.username
        if ok:
            self.auth_logins.append(("XOAUTH2", fields["user"]))
        return AuthResult(success=ok, handled=False, auth_data=fields.get("user"))

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        self.auth_attempts += 1
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if user == self.username and password == self.password:
                self.auth_logins.append((mechanism, user))
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class SmtpRelay:
    """A real SMTP server (aiosmtpd) that tests can make answer 4xx/5xx (Mailman testing/mta.py)."""

    username = "relay-user"
    password = "relay-pass"
    oauth2_token = "relay-oauth2-token"

    def __init__(self, dovecot: Dovecot | None, *, auth_required: bool = False,
                 cert: TlsCert | None = None) -> None:
        self.host = HOST
        self.port = free_port()
        self.auth_required = auth_required
        self.cert = cert
        self.handler = RelayHandler(dovecot, self.username, self.password, self.oauth2_token)
        self._controller: Controller | None = None

    @property
    def received(self) -> list[tuple[str, list[str], bytes]]:
        return self.handler.received

    @property
    def connections(self) -> int:
        return self.handler.connections

    def start(self) -> None:
        if self._controller is not None:
            return
        handler = self.handler
        kwargs: dict[str, Any] = {
            "authenticator": handler.authenticate,
            "auth_require_tls": False,
            "auth_required": self.auth_required,
        }
        if self.cert is not None:
            kwargs["tls_context"] = self.cert.server_context()

        class CountingController(Controller):
            def factory(self) -> SMTP:
                handler.connections += 1
                with warnings.catch_warnings():
                    # AUTH without TLS is what a loopback test wants.
                    warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
                    return super().factory()

        self._controller = CountingController(handler, hostname=self.host, port=self.port, **kwargs)
        self._controller.start()
        handler.connections -= 1   # Controller.start() makes one test connection itself

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def wait_delivered(self, timeout: float = 15) -> None:
        """Until no delivery into Dovecot is under way: none may land after its test ended."""
        deadline = time.monotonic() + timeout
        while self.handler._delivering:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.handler._delivering} LMTP deliveries still under way after {timeout}s")
            time.sleep(0.01)

    def fail_next(self, code: int, text: str = "", count: int | None = 1) -> None:
        """Answer the DATA of the next `count` messages (None: every one) with `code`."""
        text = text or ("4.3.0 try again later" if code < 500 else "5.7.1 message refused")
        with self.handler._lock:
            self.handler._next.append(_Refusal(code, text, count))

    def refuse(self, recipient: str, code: int = 550, text: str = "") -> None:
        """Answer RCPT TO:<recipient> with `code` until clear()."""
        text = text or ("4.2.1 mailbox busy" if code < 500 else "5.1.1 no such user here")
        with self.handler._lock:
            self.handler._recipients[recipient.lower()] = _Refusal(code, text, None)

    def clear(self) -> None:
        with self.handler._lock:
            self.handler._next.clear()
            self.handler._recipients.clear()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> TlsCert:
    return make_cert(tmp_path_factory.mktemp("tls"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "private_dovecot: the test stops or restarts Dovecot, so it gets a "
                                       "Dovecot of its own instead of the session's shared one")


def _new_dovecot(tls_cert: TlsCert, *, shared: bool) -> Dovecot:
    if shutil.which("dovecot") is None:
        pytest.fail("dovecot is not installed: run scripts/install-system-deps.sh")
    # A short path: Dovecot's unix sockets live under base_dir (108-byte limit).
    return Dovecot(Path(tempfile.mkdtemp(prefix="dovecot-")), tls_cert, shared=shared)


@pytest.fixture(scope="session")
def shared_dovecot(tls_cert: TlsCert) -> Iterator[Dovecot]:
    """The session's Dovecot; tests take it through `dovecot`, which cleans it for each."""
    server = _new_dovecot(tls_cert, shared=True)
    try:
        server._start()
        yield server
    finally:
        server._kill()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def dovecot(request: pytest.FixtureRequest, tls_cert: TlsCert) -> Iterator[Dovecot]:
    """A Dovecot with no users and no mail: the shared one after reset(), or, for a test marked
    private_dovecot, one started for this test alone (which it may stop and start)."""
    if request.node.get_closest_marker("private_dovecot") is None:
        shared: Dovecot = request.getfixturevalue("shared_dovecot")
        shared.reset()
        yield shared
        return
    server = _new_dovecot(tls_cert, shared=False)
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def smtp_server(dovecot: Dovecot, tls_cert: TlsCert) -> Iterator[SmtpRelay]:
    """A relay that delivers into `dovecot`: for tests that read the recipients' mailboxes."""
    relay = SmtpRelay(dovecot, cert=tls_cert)
    try:
        relay.start()
        yield relay
    finally:
        relay.stop()
        relay.wait_delivered()


@pytest.fixture
def smtp_sink(tls_cert: TlsCert) -> Iterator[SmtpRelay]:
    """A relay that keeps what it accepts in `received` and delivers it nowhere: no Dovecot."""
    relay = SmtpRelay(None, cert=tls_cert)
    try:
        relay.start()
        yield relay
    finally:
        relay.stop()
