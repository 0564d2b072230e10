"""The parsers and the pure core stay fully typed (STYLE §3: mypy --strict)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRICT = ["parsers", "daemon/core", "daemon/config.py", "daemon/clock.py", "daemon/ops/cli.py"]


def test_mypy_strict_on_the_pure_code() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports", "--follow-imports=silent", *STRICT],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
