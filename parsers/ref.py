"""The human reference of a request: `SA-` and six or more digits (DESIGN §1).

One pattern for the whole code base. At most twelve digits: more than any request id
will reach, and few enough that a forged `SA-999…` never overflows a database integer.
"""

from __future__ import annotations

import re

REF_RE = re.compile(r"(?<![A-Za-z0-9])SA-(\d{6,12})(?!\d)", re.IGNORECASE)


def format_ref(request_id: int) -> str:
    return f"SA-{request_id:06d}"


def parse_ref(ref: str) -> int | None:
    """"SA-000042" -> 42; None for anything else."""
    m = REF_RE.fullmatch(ref.strip())
    return int(m.group(1)) if m else None


def find_refs(text: str) -> list[str]:
    """Every reference in `text`, upper-cased, in order."""
    return [f"SA-{digits}" for digits in REF_RE.findall(text)]
