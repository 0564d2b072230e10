"""Deployment files: the systemd unit is valid, and the daemon speaks sd_notify to it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from e2e import SMARTACCT, Install, wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: install Debian's systemd package")
    unit = (ROOT / "deploy" / "smartacct.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "Restart=on-failure" in unit
    assert "EnvironmentFile=" in unit
    local = tmp_path / "smartacct.service"  # the same unit, pointing at this checkout's executable
    local.write_text(unit.replace("/opt/smartacct/.venv/bin/smartacct", SMARTACCT))
    proc = subprocess.run([analyze, "verify", "--man=no", str(local)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


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
