"""`python tests/launch.py OFFSET ARGS...`: the `smartacct` executable, living OFFSET ("91d") in
the future. Test-only: the real entry point, `daemon.ops.cli.main`, given an OffsetClock, for the
tests that need a real process (signals, restarts, kills) on a shifted clock (Install.offset)."""

from __future__ import annotations

import sys

from daemon.clock import OffsetClock
from daemon.config import parse_duration
from daemon.ops.cli import main

if __name__ == "__main__":
    offset, *argv = sys.argv[1:]
    sys.exit(main(argv, clock=OffsetClock(parse_duration(offset))))
