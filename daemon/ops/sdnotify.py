"""The systemd notify protocol (sd_notify(3)): READY, STOPPING and watchdog pings over a datagram socket.

Eight lines of socket code do what libsystemd would; without NOTIFY_SOCKET (not under
systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Mapping


class Notifier:
    def __init__(self, environ: Mapping[str, str]) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 1e6 if watched else None
        self._last_ping = 0.0

    def _send(self, state: str) -> None:
        if not self._address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), self._address)

    def ready(self) -> None:
        self._send("READY=1\nSTATUS=handling mail")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def alive(self) -> None:
        """A watchdog ping, at most twice per interval (systemd's advice)."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval / 2:
            self._last_ping = now
            self._send("WATCHDOG=1")

    def max_sleep(self) -> float | None:
        """How long the loop may block without missing a ping."""
        return None if self.watchdog_interval is None else self.watchdog_interval / 3
