"""Every benchmark the README lists runs to its table, at a size that takes seconds.

The figures are not checked here (speed is for the benchmarks, not for tests); what is checked
is that each script still starts its servers, drives smartacct through a config it accepts,
verifies what it measured, and prints its table with the baseline beside it. Twice this round
a config key becoming required stopped every IMAP benchmark at `config check` unnoticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE = {
    "floor": ["--n", "20", "--repeat", "1"],
    "render": ["--n", "50", "--repeat", "1"],
    "outbox": ["--n", "20", "--repeat", "1"],
    "ingest": ["--n", "20", "--repeat", "1", "--raw-repeat", "1", "--sql", "20"],
    "latency": ["--n", "3", "--gap", "0.05", "--burst", "20"],
    "memory": ["--n", "20", "--burst", "10", "--idle", "0.5"],
    "scale": ["--n", "20", "--instances", "1", "2", "--profiler", "none"],
    "checks": ["--sizes", "2000", "--repeat", "1"],
}


def test_every_benchmark_in_the_readme_is_smoke_tested() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = {line.split("bench/")[1].split(".py")[0] for line in readme.splitlines()
              if line.startswith(".venv/bin/python bench/")}
    assert listed == set(SMOKE)


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_the_benchmark_runs_to_its_table(name: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), *SMOKE[name]], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "machine: " in proc.stdout and "\n| " in proc.stdout, out[-3000:]   # the header, then a table
    assert "Traceback" not in out, out[-3000:]
