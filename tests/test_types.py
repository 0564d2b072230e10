"""All the product code stays fully typed (STYLE §3: mypy --strict).

Whole folders, not a list of files, so a new module is checked without anyone adding it.
The settings (mypy_path = stubs/ for the libraries that ship no types) are in pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ["daemon", "parsers", "models"]


def test_mypy_strict_over_all_product_code() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", *PRODUCT],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
