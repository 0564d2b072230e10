"""Limits on handling one message (DESIGN §4): a CPU budget in the daemon's own process, and a
child process with CPU-time and memory limits for a message that stalled, killed or failed
a process before.

In process, `budget()` arms SIGPROF for the message's CPU seconds; when it fires it raises
MessageTimeout, a BaseException, so no parser's fallback can swallow it. A message that was
in hand when a process died, or that failed before, goes to `python -m daemon.engine.child`
instead: whatever it does there (loops in C, exhausts memory, crashes the interpreter), only
the child dies, the daemon charges the attempt to the message and moves on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import pickle
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from daemon.clock import Clock
    from daemon.config import Config
    from daemon.mail.mailbox import InboxMessage

MESSAGE_BUDGET = 10.0                  # CPU seconds one message may take; a 25 MB message needs about 0.5
CHILD_MEMORY = 2 * 1024**3             # address space of a child: a 25 MB message peaks near 300 MB
CHILD_STARTUP = 10.0                   # CPU seconds a child may spend importing before its budget starts
WALL_FACTOR = 4                        # a child waiting on a lock still ends: wall time = 4 × (budget + startup)


class MessageTimeout(BaseException):
    """A message used up its CPU budget. Not an Exception: a parser's fallback must not catch it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"used more than its CPU budget of {seconds:g}s")


@contextlib.contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Raise MessageTimeout in this (main) thread once the process has used `seconds` of CPU.

    The timer re-fires every second, should anything catch the first one. Outside the main
    thread signals cannot be delivered to us, and the child process is the only limit.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    armed = True

    def expired(signum: int, frame: FrameType | None) -> None:
        if armed:
            raise MessageTimeout(seconds)

    previous = signal.signal(signal.SIGPROF, expired)
    signal.setitimer(signal.ITIMER_PROF, seconds, 1.0)
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


# --- the child ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """Everything a child needs: it opens its own database connection and renders with its own
    Jinja2 environment, at the parent's clock."""

    config: Config
    now: dt.datetime
    item: InboxMessage
    raw_hash: str
    budget: float


@dataclass(frozen=True)
class ChildResult:
    """How the child ended: done (with the folder and the ref), failed (the message's fault), race (retry),
    unavailable (the database: not the message's fault)."""

    result: str
    folder: str | None = None
    ref: str | None = None          # the request the message concerns
    error: str | None = None


@dataclass(frozen=True)
class Isolation:
    """Runs one message's handling in `python -m daemon.engine.child`, with the parent's
    config and clock; a child that dies is the message's failure."""

    config: Config
    clock: Clock
    budget: float

    def run(self, item: InboxMessage, raw_hash: str) -> ChildResult:
        job = pickle.dumps(Job(self.config, self.clock.now(), item, raw_hash, self.budget))
        wall = WALL_FACTOR * (self.budget + CHILD_STARTUP)
        proc = subprocess.Popen([sys.executable, "-m", "daemon.engine.child"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, close_fds=True)
        try:
            out, _ = proc.communicate(job, timeout=wall)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return ChildResult("failed", error=f"took longer than {wall:g}s (killed)")
        lines = out.decode("utf-8", "replace").strip().splitlines()
        if proc.returncode == 0 and lines:
            data = json.loads(lines[-1])
            return ChildResult(data["result"], data.get("folder"), data.get("ref"), data.get("error"))
        return ChildResult("failed", error=_death(proc.returncode))


def _death(returncode: int) -> str:
    if returncode < 0:
        sig = signal.Signals(-returncode)
        why = {signal.SIGXCPU: "over its CPU limit", signal.SIGKILL: "killed (CPU or memory limit)"}.get(sig, "")
        return f"the child handling it died of {sig.name}" + (f": {why}" if why else "")
    return f"the child handling it exited with status {returncode}"
