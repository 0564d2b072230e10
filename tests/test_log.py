"""The log as admins read it (DESIGN §7), from real `run --once` passes over Maildirs: typed JSON,
`true`/`false` in the text, `ref=` on every line about a message that concerns a request, and a
`daemon.started` that says what runs, from which config file, on which mailbox, outbox and database.
"""

from __future__ import annotations

import email.utils
import hashlib
import importlib.metadata
import json
import re
from pathlib import Path
from typing import Any

from e2e import Install, Sent, good_fields, in_process, reply, request_email
from pg import Postgres

from daemon.ops import cli as daemon_cli

REF = "SA-000001"
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse(line: str) -> tuple[str, dict[str, Any]]:
    """A text line of our own log -> (event, {key: value}); quoted values are JSON strings."""
    _time, _level, name, *_ = line.split(" ", 3)
    rest = line.split(" ", 3)[3] if line.count(" ") >= 3 else ""
    return name, {k: json.loads(v) if v.startswith('"') else v for k, v in _PAIR.findall(rest)}


def lines(install: Install) -> list[tuple[str, dict[str, Any]]]:
    return [parse(line) for line in install.log().splitlines()]


def about(install: Install, key: str) -> list[tuple[str, dict[str, Any]]]:
    """The lines about the message dropped as `key`, and what they say, in order."""
    return [(name, fields) for name, fields in lines(install) if fields.get("key") == key]


def submit(install: Install) -> Sent:
    install.drop(request_email(good_fields()))
    install.run_once()
    [review] = install.new_sent()
    return review


# --- daemon.started, and booleans in the text ------------------------------------------------------

def test_daemon_started_names_the_version_the_config_file_and_every_place(install: Install) -> None:
    install.run_once()
    [started] = [line for line in install.log().splitlines() if " daemon.started " in line]
    name, fields = parse(started)
    assert fields == {
        "version": importlib.metadata.version("smartacct"),
        "config": str(install.config.resolve()),
        "mailbox": str(install.inbox.resolve()),
        "outbox": str(install.outbox.resolve()),
        "database": f"sqlite:///{install.root.resolve()}/var/smartacct.db",
        "once": "true",
    }
    assert "False" not in install.log() and "True" not in install.log()   # Python's spelling, nowhere


def test_daemon_started_says_when_it_runs_on_the_embedded_default(tmp_path: Path) -> None:
    with in_process({}, tmp_path) as (_out, err):
        assert daemon_cli.main(["run", "--once"]) == 0
    [started] = [line for line in err.getvalue().splitlines() if " daemon.started " in line]
    _, fields = parse(started)
    assert fields["config"] == "embedded default"
    assert fields["mailbox"] == str(tmp_path.resolve() / "var" / "inbox")
    assert fields["outbox"] == str(tmp_path.resolve() / "var" / "outbox")
    assert fields["database"] == f"sqlite:///{tmp_path.resolve()}/var/smartacct.db"


def test_daemon_started_names_the_database_without_its_password(tmp_path: Path, postgres: Postgres) -> None:
    """PostgreSQL here trusts every local connection, so the passwords are accepted and ignored."""
    url = postgres.fresh_database()
    secret_url = url.replace("smartacct@", "smartacct:hunter2-in-url@", 1) + "?password=hunter3-in-query"
    install = Install(tmp_path, database_url=secret_url)
    try:
        install.run_once()
    finally:
        postgres.drop_database(url)
    log = install.log()
    assert "hunter2" not in log and "hunter3" not in log
    [started] = [line for line in log.splitlines() if " daemon.started " in line]
    assert parse(started)[1]["database"] == url


# --- the JSON log ----------------------------------------------------------------------------------

def test_the_json_log_writes_numbers_and_booleans_as_json_and_still_cuts_what_mail_says(tmp_path: Path) -> None:
    install = Install(tmp_path, extra_config='format = "json"\n')    # lands in the [logging] section
    install.drop(request_email(good_fields()))
    hostile = ("From: paula@partner.example\r\nTo: smart-accounts@example.com\r\n"
               "Subject: =?utf-8?q?red=E2=80=AEtext?= " + "x" * 2000 + "\r\n"
               f"Date: {email.utils.formatdate()}\r\nMessage-ID: <hostile@partner.example>\r\n\r\n"
               "Hello, no form here.\r\n").encode()
    install.drop(hostile)
    install.run_once()

    records = [json.loads(line) for line in install.log().splitlines()]   # every line is one JSON object
    by_event = {r["event"]: r for r in records}
    assert by_event["daemon.started"]["once"] is True
    assert by_event["daemon.started"]["config"] == str(install.config.resolve())
    sent = [r for r in records if r["event"] == "email.sent"]
    assert sorted(r["outbox"] for r in sent) == [1, 2]                   # numbers, not "1"
    for record in records:
        for key, value in record.items():
            assert value not in ("True", "False", "true", "false"), (key, record)
    subject = by_event["message.not_a_request"]["subject"]
    assert "\u202e" not in subject and subject.startswith("red\\u202etext x")   # escaped, as in the text
    assert len(subject.replace("\\u202e", "?")) == 500                         # cut to log.MAX_VALUE
    assert by_event["message.not_a_request"]["level"] == "INFO"
    assert by_event["request.created"]["ref"] == REF


# --- ref= on every line about a message that concerns a request -----------------------------------

def test_every_line_about_a_message_of_a_request_carries_its_ref(install: Install) -> None:
    review = submit(install)
    [(_, created)] = [(n, f) for n, f in lines(install) if n == "message.handled"]
    assert created["ref"] == REF

    confirm = reply(review, "CONFIRM")
    confirmed = install.drop(confirm)
    install.run_once()
    activation = next(s for s in install.new_sent() if s.to == "carla@acme.example")

    away = reply(activation, "I am out of the office until Monday.")
    away["Auto-Submitted"] = "auto-replied"
    ignored = install.drop(away)
    again = install.drop(confirm)                      # the same CONFIRM delivered twice
    forged = reply(review, "CONFIRM")
    forged.replace_header("From", "paula@partner.example, mallory@partner.example")
    refused = install.drop(forged)
    bounce = install.drop(_dsn(activation))
    install.run_once()

    for key in (confirmed, ignored, refused, bounce):
        assert [n for n, _ in about(install, key)] == ["message.handled", "message.filed"], key
    assert [n for n, _ in about(install, again)] == ["message.duplicate", "message.filed"]
    for key in (confirmed, ignored, again, refused, bounce):
        for name, fields in about(install, key):
            assert fields["ref"] == REF, (key, name, fields)
    # The decision's own line about each (it names the sender, not the mailbox key).
    said = {name: fields for name, fields in lines(install)}
    assert said["message.ignored"]["ref"] == REF and said["message.ignored"]["reason"].startswith("automatic:")
    assert said["message.refused"]["ref"] == REF and said["message.refused"]["reason"] == "from_not_one_address"
    assert said["bounce.received"]["ref"] == REF
    assert [install.folder_of(k) for k in (ignored, again, refused, bounce)] == \
        ["Processed", "Processed", "Rejected", "Processed"]


def test_a_message_handled_in_a_child_process_is_filed_with_its_ref(install: Install) -> None:
    review = submit(install)
    raw = bytes(reply(review, "CONFIRM"))
    name = install.drop(raw)
    # What a process killed in the middle of handling it leaves behind: the message goes to a child.
    install.query_write("INSERT INTO attempt (raw_hash, mailbox_key, holder, held_since, first_seen, failures, "
                        f"interrupted) VALUES ('{hashlib.sha256(raw).hexdigest()}', '{name}', 'gone:1:x', "
                        "'2026-11-24 09:00:00', '2026-11-24 09:00:00', 0, 0)")
    install.run_once()
    assert [n for n, _ in about(install, name)] == ["message.isolated", "message.handled", "message.filed"]
    assert about(install, name)[-1][1]["ref"] == REF


def _dsn(returned: Sent) -> bytes:
    """A Postfix-style bounce of `returned`: multipart/report with its headers."""
    headers = "".join(f"{k}: {v}\r\n" for k, v in returned.msg.items()
                      if k.lower() in ("from", "to", "subject", "date", "message-id"))
    return ("From: MAILER-DAEMON@mx.example (Mail Delivery System)\r\n"
            "Return-Path: <>\r\nTo: smart-accounts@example.com\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nDate: Tue, 24 Nov 2026 10:05:00 +0000\r\n"
            "Message-ID: <dsn.1@mx.example>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
            "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n"
            "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
            f"Final-Recipient: rfc822; {returned.to}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
            "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n" + headers + "\r\n--B--\r\n").encode()
