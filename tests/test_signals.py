"""Signals reach the daemon at any moment, also in the middle of a log write (DESIGN §6, §7):
SIGTERM is always logged and stops the loop, SIGHUP always reopens the log file.

The main thread here writes log lines as fast as it can, as the daemon does under a backlog,
and a timer thread sends the signal at a seeded random moment; a handler that logged by itself
lost its line now and then (a reentrant call into the file's buffer), which is what this finds.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import events, log
from daemon.engine.loop import _stop_on_signals
from seeds import seeded


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "smartacct.log"
    handler = log.setup(file=str(path))
    yield path
    handler.close()


def _write_until(stop: threading.Event, deadline: float) -> int:
    written = 0
    while not stop.is_set() and time.monotonic() < deadline:
        log.event(events.MESSAGE_DUPLICATE, key="x" * 200, ref="SA-000001")
        written += 1
    return written


def test_sigterm_in_the_middle_of_log_writes_is_logged_and_stops(log_file: Path) -> None:
    rng = seeded("sigterm-during-log-writes")
    for _ in range(40):
        stop = threading.Event()
        restore = _stop_on_signals(stop)
        try:
            timer = threading.Timer(rng.uniform(0.0, 0.01), os.kill, (os.getpid(), signal.SIGTERM))
            timer.start()
            _write_until(stop, time.monotonic() + 10)
            timer.join()
        finally:
            restore()
        assert stop.is_set(), "SIGTERM did not stop the loop"
        text = log_file.read_text()
        assert text.count("daemon.stopping signal=SIGTERM") == 1, "the SIGTERM was not logged"
        log_file.write_text("")


def test_sighup_reopens_the_log_file_after_logrotate_moved_it(log_file: Path) -> None:
    stop = threading.Event()
    restore = _stop_on_signals(stop)
    try:
        log.event(events.MESSAGE_DUPLICATE, key="before", ref="SA-000001")
        rotated = log_file.with_suffix(".log.1")
        log_file.rename(rotated)
        timer = threading.Timer(0.005, os.kill, (os.getpid(), signal.SIGHUP))
        timer.start()
        _write_until(threading.Event(), time.monotonic() + 0.2)
        timer.join()
        deadline = time.monotonic() + 5
        while not (log_file.exists() and "log.reopened" in log_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        restore()
    assert "key=before" in rotated.read_text()
    assert "log.reopened" in log_file.read_text()
    assert not stop.is_set(), "SIGHUP must not stop the daemon"
