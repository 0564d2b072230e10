"""One seed for every random-driven test, so CI is green every time and a failure can be replayed.

By default the seed is fixed. `SMARTACCT_SEED=n` replays a run; `SMARTACCT_SOAK=1` draws a
fresh seed per session (`make soak` loops the crash and instance tests with it). The seed
is printed in pytest's header and under every failed test. Hypothesis has its own profiles
(tests/conftest.py): derandomized by default, random under soak.
"""

from __future__ import annotations

import os
import random

DEFAULT_SEED = 20261201


def _base() -> int:
    if os.environ.get("SMARTACCT_SEED"):
        return int(os.environ["SMARTACCT_SEED"])
    if os.environ.get("SMARTACCT_SOAK"):
        return random.SystemRandom().randrange(2**32)
    return DEFAULT_SEED


SEED = _base()
SOAK = bool(os.environ.get("SMARTACCT_SOAK"))


def seeded(name: str) -> random.Random:
    """A generator of its own for each use, so adding one use never shifts another's numbers."""
    return random.Random(f"{SEED}:{name}")


def replay_hint() -> str:
    return f"random seed {SEED}: replay with SMARTACCT_SEED={SEED}"
