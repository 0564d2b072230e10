"""The README's "Try it" walk-through, pasted verbatim into a fresh folder (issue 15).

The ```sh blocks of that section run in order, each in its own shell as a newcomer pastes it,
in a temp folder holding what a clone has there (examples/, config.example.toml, no config.toml,
no var/) and `.venv` linked to this checkout's. Each step must print what the README says it
shows, and the end must be what the walk-through promises: SA-000001 `active`, every email in
the outgoing Maildir, every message filed. An edited command, a reordered step or prose that
no longer matches the output fails here.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import sqlite3
import subprocess
import textwrap
from email.message import EmailMessage
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV = ROOT / ".venv"

CUSTOMER = "carla.customer@acme-robotics.example"
PARTNER = "paula@partner.example"
USERS = ("dev1@acme-robotics.example", "dev2@acme-robotics.example")

# Per step: strings its output must contain, and the README's prose about that step too.
SEEN = [
    ("request.created ref=SA-000001", f"kind=review to={PARTNER}", "awaiting_confirmation"),
    ("request.confirmed ref=SA-000001 state=pending_acceptance", "kind=request_complete", "kind=activation", CUSTOMER),
    ("request.accepted ref=SA-000001 state=active", "activation_confirmation", "welcome", "user_notice", *USERS),
    ("SA-000001", "active", "user_notice", "welcome", "activation_confirmation", "request_complete", "review",
     CUSTOMER, "acceptance rate"),
]


def try_it_section(text: str) -> str:
    start = text.index("\n## Try it\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def steps(section: str) -> list[tuple[str, str]]:
    """(commands, the prose up to the next block) for each ```sh block, the list indent removed."""
    pattern = re.compile(r"^( *)```sh\n(.*?)^\1```\n", re.S | re.M)
    found = list(pattern.finditer(section))
    return [(textwrap.dedent(m.group(2)),
             section[m.end():found[i + 1].start() if i + 1 < len(found) else len(section)])
            for i, m in enumerate(found)]


@pytest.fixture
def newcomer(tmp_path: Path) -> Path:
    """A folder as after clone and setup: the examples, the config example, the venv."""
    if not (VENV / "bin" / "smartacct").exists():
        pytest.fail(f"no {VENV}/bin/smartacct: run `bash scripts/setup.sh` first")
    home = tmp_path / "smartacct"
    home.mkdir()
    shutil.copytree(ROOT / "examples", home / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "config.example.toml", home)
    (home / ".venv").symlink_to(VENV)
    return home


def test_the_walk_through_reaches_active_by_copy_and_paste(newcomer: Path) -> None:
    found = steps(try_it_section(README.read_text(encoding="utf-8")))
    assert len(found) == len(SEEN), f"the walk-through has {len(found)} steps, this test knows {len(SEEN)}"
    env = {k: v for k, v in os.environ.items() if k != "SMARTACCT_CONFIG"}   # the embedded default
    outputs = []
    for (commands, prose), seen in zip(found, SEEN):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=newcomer, env=env,
                              capture_output=True, text=True, timeout=120)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"$ {commands}\n{output}"
        for text in seen:
            assert text in output, f"$ {commands}\ndoes not show {text!r}:\n{output}"
            assert text in " ".join(prose.split()), f"the README does not say it shows {text!r}:\n{prose}"
        outputs.append(output)

    db = sqlite3.connect(f"file:{newcomer / 'var' / 'smartacct.db'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT state, account_name FROM request").fetchall() == [("active", "Acme Robotics")]
        assert db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall() == [("sent", 7)]
    finally:
        db.close()

    sent = [_read(p) for p in sorted((newcomer / "var" / "outbox" / "new").iterdir())]
    to = sorted(str(m["To"]) for m in sent)
    assert to == sorted([PARTNER] * 3 + [CUSTOMER] * 2 + list(USERS)), to

    inbox = newcomer / "var" / "inbox"
    assert len(list((inbox / ".Processed" / "cur").iterdir())) == 3   # the request, CONFIRM, ACCEPT
    for left in (inbox / "new", inbox / "cur", inbox / ".Rejected" / "cur", inbox / ".Quarantine" / "cur"):
        assert not any(left.iterdir()), f"{left} is not empty"

    # The replies carried the codes; neither reply.py nor the daemon printed one.
    codes = {m.group(1) for msg in sent if (m := re.search(r"Code: (\w+)", _text(msg)))}
    assert len(codes) >= 2
    for code in codes:
        assert not any(code in out for out in outputs)


def _read(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return str(part.get_content()) if isinstance(part, EmailMessage) else ""


# --- the phrasings table (issue 14) -------------------------------------------------------------

_WHO = {"CONFIRM": "partner", "CANCEL": "partner", "ACCEPT": "customer", "DECLINE": "customer",
        "STATUS": "partner or customer", "HELP": "anyone allowed to write"}


def phrases_table() -> str:
    """The README's table of phrasings, as parsers/reply.PHRASES has them."""
    from parsers.reply import PHRASES

    def cell(phrases: tuple[str, ...]) -> str:
        return ", ".join(f"`{p}`" for p in phrases) or "–"
    rows = ["| keyword | who | English | German |", "| --- | --- | --- | --- |"]
    rows += [f"| `{k.value}` | {_WHO[k.value]} | {cell(langs['en'])} | {cell(langs['de'])} |"
             for k, langs in PHRASES.items()]
    return "\n".join(rows)


def test_the_readme_lists_every_phrasing_the_parser_takes() -> None:
    assert phrases_table() in README.read_text(encoding="utf-8"), (
        "README.md's phrasings table is stale: replace it with tests/test_readme.py's phrases_table()")
