"""Write the reply a person would send to one of smartacct's emails, into the inbox Maildir.

For trying smartacct on the embedded default (README, "Try it"): the partner answers the
review with CONFIRM, the customer the activation email with ACCEPT. Copying our email and
swapping From/To does not work: the copy keeps `Auto-Submitted` (ignored as automatic) and
our Message-ID (a duplicate). This writes what a mail program's "Reply" would: from the
address our email went to, to its Reply-To, a new Message-ID, In-Reply-To/References to our
email, `Re:` subject, the word as the first line above the quoted text.

Our email is the newest one in the outgoing Maildir sent to ADDRESS, or the file given with
--file. The delivered email is read because it alone carries the reply code (the database
keeps only a hash); the code goes into the reply, as it would, and is never printed.

Standard library only, like any mail client outside smartacct.
"""

from __future__ import annotations

import argparse
import datetime
import os
import secrets
import socket
import sys
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr
from pathlib import Path

MAX_EMAIL_BYTES = 10_000_000   # our emails are a few kB; anything far larger is not one of them


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        if args.file is not None:
            original_path = Path(args.file)
            original = _read(original_path)
            person = _first_recipient(original)
        else:
            person = args.address.strip().lower()
            original_path, original = _newest_to(Path(args.outbox), person)
        reply = compose(original, person, args.word)
        written = deliver(reply, Path(args.inbox))
    except ReplyError as exc:
        print(f"reply.py: {exc}", file=sys.stderr)
        return 1
    # Subject and file names only: the To (plus-address) and the quoted footer carry the code.
    print(f"wrote {written}: {args.word} from {person}, a reply to "
          f"{str(original.get('Subject', ''))!r} ({original_path})")
    return 0


class ReplyError(Exception):
    """Something the user can fix: no such email, no inbox; one line on stderr, exit 1."""


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="reply.py",
        usage="%(prog)s [--outbox DIR] [--inbox DIR] ADDRESS WORD\n"
              "       %(prog)s [--inbox DIR] --file EML WORD",
        description="Reply to smartacct's newest email to ADDRESS (or to --file) with WORD, "
                    "as that person would, into the inbox Maildir.",
        epilog="example: reply.py paula@partner.example CONFIRM")
    p.add_argument("words", nargs="+", metavar="[ADDRESS] WORD",
                   help="who answers (the address our email went to) and the first line of the "
                        "answer, e.g. CONFIRM, ACCEPT, DECLINE, CANCEL; with --file only WORD")
    p.add_argument("--file", metavar="EML", help="reply to this email file instead")
    p.add_argument("--outbox", default="var/outbox", metavar="DIR",
                   help="the outgoing Maildir, smtp.path (default: %(default)s)")
    p.add_argument("--inbox", default="var/inbox", metavar="DIR",
                   help="the inbox Maildir, mailbox.path (default: %(default)s)")
    args = p.parse_args(argv)
    wanted = 1 if args.file is not None else 2
    if len(args.words) != wanted:
        p.error("give WORD with --file, ADDRESS WORD without")
    args.address = None if args.file is not None else args.words[0]
    args.word = args.words[-1]
    if "\n" in args.word or "\r" in args.word:
        p.error("WORD is one line")
    return args


def _read(path: Path) -> EmailMessage:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_EMAIL_BYTES + 1)
    except OSError as exc:
        raise ReplyError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_EMAIL_BYTES:
        raise ReplyError(f"{path} is larger than {MAX_EMAIL_BYTES} bytes: not one of our emails")
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def _recipients(msg: EmailMessage) -> list[str]:
    values = [str(v) for v in (msg.get_all("To") or []) + (msg.get_all("Cc") or [])]
    return [addr.lower() for _, addr in getaddresses(values) if addr]


def _first_recipient(msg: EmailMessage) -> str:
    found = _recipients(msg)
    if not found:
        raise ReplyError("the email has no To address: nobody to reply as")
    return found[0]


def _newest_to(outbox: Path, person: str) -> tuple[Path, EmailMessage]:
    """The newest email in the outgoing Maildir addressed to `person` (by file time, then name)."""
    candidates: list[tuple[int, str, Path]] = []
    for sub in ("new", "cur"):
        try:
            with os.scandir(outbox / sub) as it:
                candidates.extend((e.stat().st_mtime_ns, e.name, Path(e.path)) for e in it
                                  if e.is_file() and not e.name.startswith("."))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ReplyError(f"cannot list {outbox / sub}: {exc.strerror}") from None
    for _, _, path in sorted(candidates, reverse=True):
        msg = _read(path)
        if person in _recipients(msg):
            return path, msg
    raise ReplyError(f"no email to {person} in {outbox}/new or {outbox}/cur "
                     "(has smartacct sent it yet? run `smartacct run --once`)")


def compose(original: EmailMessage, person: str, word: str) -> EmailMessage:
    """The reply a mail program writes: new Message-ID, threaded to `original`, quoting its text."""
    ours = str(original.get("Reply-To") or original.get("From") or "")
    if not parseaddr(ours)[1]:
        raise ReplyError("the email has neither Reply-To nor From: nowhere to reply to")
    their_id = str(original.get("Message-ID") or "").strip()
    reply = EmailMessage(policy=policy.SMTP)
    reply["From"] = person
    reply["To"] = ours
    subject = str(original.get("Subject") or "")
    reply["Subject"] = subject if subject[:3].lower() == "re:" else f"Re: {subject}"
    reply["Date"] = format_datetime(datetime.datetime.now(datetime.timezone.utc))
    reply["Message-ID"] = make_msgid(domain=person.rpartition("@")[2] or None)
    if their_id:
        reply["In-Reply-To"] = their_id
        references = str(original.get("References") or "").split()
        reply["References"] = " ".join([*references, their_id])
    reply.set_content(f"{word}\n\n{_attribution(original)}\n{_quoted(original)}")
    return reply


def _attribution(original: EmailMessage) -> str:
    return f"On {original.get('Date', 'an earlier day')}, {original.get('From', 'you')} wrote:"


def _quoted(original: EmailMessage) -> str:
    part = original.get_body(preferencelist=("plain",))
    text = part.get_content() if isinstance(part, EmailMessage) else ""
    return "".join(f"> {line}".rstrip() + "\n" for line in str(text).splitlines())


def deliver(msg: EmailMessage, inbox: Path) -> Path:
    """Into `inbox/new/` as a mail server delivers: written in tmp/, then renamed (Maildir)."""
    if not (inbox / "new").is_dir() or not (inbox / "tmp").is_dir():
        raise ReplyError(f"{inbox} is not a Maildir (no new/ and tmp/): "
                         "run `smartacct run --once` once to create it")
    name = f"{int(time.time())}.R{secrets.token_hex(8)}.{socket.gethostname().replace('/', '_').replace(':', '_')}"
    tmp = inbox / "tmp" / name
    try:
        tmp.write_bytes(msg.as_bytes())
        os.replace(tmp, inbox / "new" / name)
    except OSError as exc:
        raise ReplyError(f"cannot write into {inbox}: {exc.strerror}") from None
    return inbox / "new" / name


if __name__ == "__main__":
    sys.exit(main())
