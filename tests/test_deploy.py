"""Deployment files: the systemd unit is valid, the daemon speaks sd_notify to it, and
deploy/install.sh gives the service user what it needs (issue 15 item 7).

The install tests run deploy/install.sh as root into a fresh root file system in a temp
folder (DESTDIR), so they never touch this machine's /etc: the user goes into that
folder's etc/passwd, and the service user's commands run under its numeric ids (setpriv).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from daemon import config as config_mod
from e2e import SMARTACCT, Install, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NOBODY = 65534   # another user: neither root nor the service user


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: install Debian's systemd package")
    unit = (ROOT / "deploy" / "smartacct.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "Restart=on-failure" in unit
    assert "EnvironmentFile=" in unit
    local = tmp_path / "smartacct.service"  # the same unit, pointing at this checkout's executable
    local.write_text(unit.replace("/opt/smartacct/.venv/bin/smartacct", SMARTACCT))
    _verify(local)


def _verify(unit: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: run scripts/install-system-deps.sh (Debian's systemd package)")
    proc = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True)
    # verify exits 0 on an unknown key or a bad value ("ignoring"): only silence is valid.
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_the_daemon_notifies_ready_pings_the_watchdog_and_says_stopping(install: Install, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "900000"}
    proc = subprocess.Popen([SMARTACCT, "-c", str(install.config), "run"], cwd=install.root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    received: list[str] = []

    def heard(text: str) -> bool:
        try:
            received.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
        return any(text in r for r in received)
    try:
        wait_for(lambda: heard("READY=1"), timeout=15)
        listen_until = time.monotonic() + 2.0
        while time.monotonic() < listen_until:
            heard("WATCHDOG=1")
        assert sum("WATCHDOG=1" in r for r in received) >= 3  # at least every interval/2 = 0.45 s
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: heard("STOPPING=1"), timeout=10)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        sock.close()



# --- deploy/install.sh -----------------------------------------------------------------------

@dataclass
class RootFs:
    """A root file system in a temp folder that deploy/install.sh installs into (DESTDIR)."""

    path: Path
    smartacct: str   # the executable the unit and /usr/local/sbin/smartacct run

    def __truediv__(self, absolute: str) -> Path:
        return self.path / absolute.lstrip("/")

    def install(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(DEPLOY / "install.sh")], capture_output=True, text=True,
                              env={**os.environ, "DESTDIR": str(self.path), "SMARTACCT": self.smartacct, **env})

    def ids(self) -> tuple[int, int]:
        """The service user's uid and gid, from this root's etc/passwd (none on this machine)."""
        [line] = [entry for entry in (self / "/etc/passwd").read_text().splitlines()
                  if entry.startswith("smartacct:")]
        fields = line.split(":")
        assert fields[5:] == ["/var/lib/smartacct", "/usr/sbin/nologin"]
        [group] = [entry for entry in (self / "/etc/group").read_text().splitlines() if entry.startswith("smartacct:")]
        assert group.split(":")[2] == fields[3]
        return int(fields[2]), int(fields[3])

    def as_user(self, uid: int, gid: int, *argv: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv],
                              capture_output=True, text=True, cwd="/", env={**os.environ, **(env or {})})

    def as_if_mounted(self, relative: str) -> Path:
        """An installed file with /var/lib/smartacct and /var/log/smartacct moved into this root:
        what the file says once this root is /."""
        path = self / relative
        text = path.read_text()
        for folder in ("/var/lib/smartacct", "/var/log/smartacct"):
            text = text.replace(f"/{folder}", f"/{self / folder}").replace(f'"{folder}', f'"{self / folder}')
        path.write_text(text)
        return path


def _runnable_by_others(executable: str) -> bool:
    """Can a user other than root start it? (A Python under /root, as pyenv puts it, is not.)"""
    proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
                           "sh", "-c", 'cd / && exec "$0" --help', executable], capture_output=True)
    return proc.returncode == 0


def _service_executable(root: Path) -> str:
    """This checkout's smartacct if another user can run it; else one started by the system's
    Python on this checkout's packages, as a .venv made with PYTHON=/usr/bin/python3 would be."""
    if _runnable_by_others(SMARTACCT):
        return SMARTACCT
    system = Path("/usr/bin/python3")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = subprocess.run([str(system), "-c", "import sys; print(*sys.version_info[:2], sep='.')"],
                           capture_output=True, text=True).stdout.strip() if system.exists() else ""
    if found != version:
        pytest.skip(f"{SMARTACCT} cannot be run by another user (its Python is out of their reach) "
                    f"and {system} is Python {found or 'missing'}, not {version}")
    launcher = root / "opt" / "smartacct" / "bin" / "smartacct"
    launcher.parent.mkdir(parents=True)
    launcher.write_text(f"#!{system} -IS\nimport site, sys\nsite.addsitedir({sysconfig.get_path('purelib')!r})\n"
                        "from daemon.ops.cli import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    if not _runnable_by_others(str(launcher)):
        pytest.skip(f"another user cannot read this checkout ({ROOT}) or its packages")
    return str(launcher)


@pytest.fixture
def root_fs() -> Iterator[RootFs]:
    if os.geteuid() != 0:
        pytest.skip("deploy/install.sh runs as root (CI runs the tests as root)")
    # Not pytest's tmp_path: its parents are root's alone, and the service user must reach in.
    path = Path(tempfile.mkdtemp(prefix="smartacct-root-"))
    try:
        path.chmod(0o755)
        (path / "etc").mkdir(mode=0o755)
        for name, mode in (("passwd", 0o644), ("group", 0o644), ("shadow", 0o640), ("gshadow", 0o640)):
            root_line = next(line for line in Path(f"/etc/{name}").read_text().splitlines() if line.startswith("root:"))
            (path / "etc" / name).write_text(root_line + "\n")
            (path / "etc" / name).chmod(mode)
        yield RootFs(path, _service_executable(path))
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_install_creates_the_user_and_gives_it_its_config_secrets_and_folders(root_fs: RootFs) -> None:
    proc = root_fs.install()
    assert proc.returncode == 0, proc.stderr
    uid, gid = root_fs.ids()
    assert uid != 0 and gid != 0
    assert _owner_mode(root_fs / "/etc/smartacct") == (0, gid, 0o750)
    assert _owner_mode(root_fs / "/etc/smartacct/config.toml") == (0, gid, 0o640)
    assert _owner_mode(root_fs / "/etc/smartacct/secrets.env") == (0, gid, 0o640)
    assert _owner_mode(root_fs / "/var/lib/smartacct") == (uid, gid, 0o700)
    assert _owner_mode(root_fs / "/var/log/smartacct") == (uid, gid, 0o750)
    assert _owner_mode(root_fs / "/etc/systemd/system/smartacct.service") == (0, 0, 0o644)
    assert _owner_mode(root_fs / "/etc/logrotate.d/smartacct") == (0, 0, 0o644)
    assert _owner_mode(root_fs / "/usr/local/sbin/smartacct") == (0, 0, 0o755)
    assert (root_fs / "/etc/smartacct/config.toml").read_text() == (DEPLOY / "config.production.toml").read_text()
    assert (root_fs / "/etc/smartacct/secrets.env").read_text() == (DEPLOY / "secrets.env").read_text()
    assert (root_fs / "/etc/logrotate.d/smartacct").read_text() == (DEPLOY / "logrotate.conf").read_text()
    unit = (root_fs / "/etc/systemd/system/smartacct.service").read_text()
    assert f"\nExecStart={root_fs.smartacct} -c /etc/smartacct/config.toml run\n" in unit
    assert "/etc/smartacct/config.toml created: edit it" in proc.stdout
    assert "WARNING" not in proc.stdout   # the production example's paths are absolute


def test_install_again_keeps_config_and_secrets_and_mends_their_modes(root_fs: RootFs) -> None:
    assert root_fs.install().returncode == 0
    uid, gid = root_fs.ids()
    config, secrets, unit = (root_fs / "/etc/smartacct/config.toml", root_fs / "/etc/smartacct/secrets.env",
                             root_fs / "/etc/systemd/system/smartacct.service")
    config.write_text("# the admin's\n[database]\nurl = \"sqlite:///var/smartacct.db\"\n")
    config.chmod(0o644)   # as an earlier README's `cp` left it
    secrets.write_text("SMARTACCT_IMAP_PASSWORD=hers\n")
    os.chown(secrets, 0, 0)
    (root_fs / "/etc/smartacct").chmod(0o700)
    unit.write_text("stale\n")
    proc = root_fs.install()
    assert proc.returncode == 0, proc.stderr
    assert root_fs.ids() == (uid, gid)
    assert [line.startswith("smartacct:") for line in (root_fs / "/etc/passwd").read_text().splitlines()] == [False, True]
    assert config.read_text().startswith("# the admin's\n") and secrets.read_text() == "SMARTACCT_IMAP_PASSWORD=hers\n"
    assert _owner_mode(config) == _owner_mode(secrets) == (0, gid, 0o640)
    assert _owner_mode(root_fs / "/etc/smartacct") == (0, gid, 0o750)
    assert "ExecStart=" in unit.read_text()   # ours is replaced: edits go in a drop-in
    assert "/etc/smartacct/config.toml kept" in proc.stdout
    assert "WARNING: /etc/smartacct/config.toml has relative paths" in proc.stdout   # the old README's copy


def test_the_service_user_reads_its_config_and_secrets_and_config_check_reports(root_fs: RootFs) -> None:
    assert root_fs.install().returncode == 0
    uid, gid = root_fs.ids()
    config = root_fs.as_if_mounted("/etc/smartacct/config.toml")
    with (root_fs / "/etc/smartacct/secrets.env").open("a") as secrets:
        secrets.write("SMARTACCT_IMAP_PASSWORD=imap-pw\nSMARTACCT_SMTP_PASSWORD=smtp-pw\n")
    command = str(root_fs / "/usr/local/sbin/smartacct")
    proc = root_fs.as_user(uid, gid, command, "config", "check", env={"SMARTACCT_CONFIG": str(config)})
    # The example's servers do not exist: the connections fail (1), the config loaded (not 2).
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert "config error" not in proc.stderr and "ermission denied" not in proc.stdout + proc.stderr
    report = proc.stdout
    assert "database" in report and "mailbox (imap)" in report and "smtp (smtp)" in report
    log_file = root_fs / "/var/log/smartacct/smartacct.log"
    assert f"config: {config}" in report.splitlines()
    assert f"logging.file: {log_file}: does not exist yet (`smartacct run` creates it)" in report.splitlines()
    assert not log_file.exists()                                           # config check reports, never creates
    assert root_fs.as_user(uid, gid, command, "template", env={"SMARTACCT_CONFIG": str(config)}).returncode == 0
    assert _owner_mode(log_file) == (uid, gid, 0o600)   # UMask-like: its own
    # Without the secrets, the config does not load, and says which key.
    (root_fs / "/etc/smartacct/secrets.env").write_text("")
    proc = root_fs.as_user(uid, gid, command, "config", "check", env={"SMARTACCT_CONFIG": str(config)})
    assert proc.returncode == 2 and "mailbox.password_env" in proc.stderr
    # Anyone else reads neither.
    for private in ("/etc/smartacct/config.toml", "/etc/smartacct/secrets.env", "/var/log/smartacct/smartacct.log"):
        assert root_fs.as_user(NOBODY, NOBODY, "cat", str(root_fs / private)).returncode != 0, private


def test_the_command_reads_secrets_env_as_systemd_does(root_fs: RootFs) -> None:
    printer = root_fs / "/opt/printenv/smartacct"
    printer.parent.mkdir(parents=True)
    printer.write_text('#!/bin/sh\nprintf "args=%s\\n" "$*"\nenv | grep "^S_" | sort\n')
    printer.chmod(0o755)
    assert root_fs.install(SMARTACCT=str(printer)).returncode == 0
    uid, gid = root_fs.ids()
    (root_fs / "/etc/smartacct/secrets.env").write_text(
        "# a comment\n; another\n\nS_PLAIN=a$b c\\d\n  S_SPACED = padded  \nS_DQ=\"quoted value\"\n"
        "S_SQ='single'\nS_EQ=x=y\nnot an assignment\nS_LAST=no newline")
    config = root_fs / "/etc/smartacct/config.toml"   # its folder's secrets.env is read
    command = [str(root_fs / "/usr/local/sbin/smartacct"), "requests", "list"]
    proc = root_fs.as_user(uid, gid, *command, env={"SMARTACCT_CONFIG": str(config)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"args=-c {config} requests list",
        "S_DQ=quoted value", "S_EQ=x=y", "S_LAST=no newline", "S_PLAIN=a$b c\\d", "S_SPACED=padded", "S_SQ=single",
    ]
    denied = root_fs.as_user(NOBODY, NOBODY, *command, env={"SMARTACCT_CONFIG": str(config)})
    assert denied.returncode == 1 and "run as root" in denied.stderr


def test_install_refuses_an_executable_the_service_user_cannot_run(root_fs: RootFs) -> None:
    hidden = root_fs / "/root/.pyenv/smartacct"   # as pyenv's Python, under a folder only root may enter
    hidden.parent.mkdir(parents=True)
    hidden.parent.parent.chmod(0o700)
    hidden.write_text("#!/bin/sh\nexit 0\n")
    hidden.chmod(0o755)
    proc = root_fs.install(SMARTACCT=str(hidden))
    assert proc.returncode == 1
    assert f"user smartacct cannot run {hidden}" in proc.stderr and "PYTHON=/usr/bin/python3" in proc.stderr
    assert not (root_fs / "/etc/systemd/system/smartacct.service").exists()


def test_the_installed_unit_verifies_and_matches_the_production_paths(root_fs: RootFs) -> None:
    assert root_fs.install().returncode == 0
    installed = root_fs / "/etc/systemd/system/smartacct.service"
    _verify(installed)
    unit = dict(line.split("=", 1) for line in installed.read_text().splitlines()
                if "=" in line and not line.startswith("#"))
    assert unit["EnvironmentFile"] == "-/etc/smartacct/secrets.env"
    assert unit["UMask"] == "0077" and unit["ProtectSystem"] == "strict"
    assert unit["User"] == unit["Group"] == "smartacct"
    # systemd makes these folders with these modes; install.sh's must agree (systemd keeps what it finds).
    assert (unit["StateDirectory"], unit["StateDirectoryMode"]) == ("smartacct", "0700")
    assert (unit["LogsDirectory"], unit["LogsDirectoryMode"]) == ("smartacct", "0750")
    writable = [Path(p) for p in unit["ReadWritePaths"].split()]
    assert writable == [Path("/var/lib/smartacct"), Path("/var/log/smartacct")]
    # Every path the daemon writes, as the production config resolves them, is under one of them.
    cfg = config_mod.load(root_fs / "/etc/smartacct/config.toml",
                          environ={"SMARTACCT_IMAP_PASSWORD": "-", "SMARTACCT_SMTP_PASSWORD": "-"})
    written = [Path(cfg.database.url.removeprefix("sqlite:///")), Path(cfg.logging.file),
               cfg.mailbox.path, cfg.smtp.path]
    for path in written:
        assert any(path.is_relative_to(folder) for folder in writable), path
    logrotate = (root_fs / "/etc/logrotate.d/smartacct").read_text()
    assert f"\n{cfg.logging.file} {{" in logrotate
