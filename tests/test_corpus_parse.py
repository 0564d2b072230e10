"""Every real-world email in the shared corpus: parsed without a crash, classified as its kind says."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from parsers.message import ParsedMessage, parse_message
from parsers.reply import find_command, reply_text, token_candidates

# ../shared/corpus from the repository; a git worktree one level deeper finds it too.
CORPUS = next((p / "shared" / "corpus" for p in Path(__file__).resolve().parents[2:]
               if (p / "shared" / "corpus" / "index.tsv").is_file()),
              Path(__file__).parent.parent.parent / "shared" / "corpus")
if not (CORPUS / "index.tsv").is_file():
    raise RuntimeError(f"the email corpus is missing: expected it at {CORPUS}")

FILES = sorted(CORPUS.glob("*/*.eml"))
NEVER_ANSWER = [p for p in FILES if p.parent.name in ("auto_reply", "bounce", "list_bulk")]
HUMAN = [p for p in FILES if p.parent.name == "human"]
# Human mail the contract never answers all the same (DESIGN §3: postmaster, whoever writes from it).
NEVER_ANSWERED_HUMAN = {"human/flanker__long-links.eml": ("from:system",)}


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_corpus_is_complete() -> None:
    listed = [line.split("\t", 1)[0] for line in (CORPUS / "index.tsv").read_text().splitlines()[1:] if line]
    assert sorted(listed) == sorted(_id(p) for p in FILES)
    assert len(NEVER_ANSWER) > 150 and len(HUMAN) > 100


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_parses_with_sane_types(path: Path) -> None:
    raw = path.read_bytes()
    msg = parse_message(raw)
    assert isinstance(msg, ParsedMessage)
    assert msg.size == len(raw) and len(msg.content_hash) == 64
    assert msg.message_id is None or (msg.message_id and "<" not in msg.message_id)
    assert msg.sender is None or ("@" in msg.sender and msg.sender == msg.sender.lower())
    assert all("@" in a and a == a.lower() for a in msg.recipients)
    assert "\n" not in msg.subject and "\r" not in msg.subject
    assert msg.date is None or msg.date.tzinfo == dt.timezone.utc
    assert msg.text_source in ("plain", "html", "attachment", "none")
    assert (msg.text == "") == (msg.text_source == "none")
    assert len(msg.text) <= 1_000_000
    assert msg.bounce_status is None or msg.bounce_status[0] in "245"
    for values in (msg.in_reply_to, msg.references, msg.auto_marks, msg.bounce_marks,
                   msg.bounced_message_ids, msg.authentication_results, msg.defects):
        assert isinstance(values, tuple) and all(isinstance(v, str) for v in values)
    # The reply functions must cope with whatever text real mail produces.
    assert isinstance(reply_text(msg.text), str)
    find_command(msg.text)
    assert len(token_candidates(msg, "example.com")) <= 20


@pytest.mark.parametrize("path", NEVER_ANSWER, ids=_id)
def test_automatic_mail_is_recognised(path: Path) -> None:
    msg = parse_message(path.read_bytes())
    assert msg.is_automatic, "no auto/bounce mark"


def test_human_mail_is_not_automatic() -> None:
    parsed = {_id(p): parse_message(p.read_bytes()) for p in HUMAN}
    flagged = {name: m.auto_marks + m.bounce_marks for name, m in parsed.items() if m.is_automatic}
    assert flagged == NEVER_ANSWERED_HUMAN
