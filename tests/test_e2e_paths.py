"""Paths the service user cannot write, through the CLI (issue 11, item 7): the daemon keeps going
with its emails queued, and `config check` and every command say what is wrong in words.

The tests run as root in CI, so "cannot write" means a place root cannot write either: under
/proc, or below a regular file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e import Daemon, Install, good_fields, request_email, wait_for

MAILDIRS = '[mailbox]\nbackend = "maildir"\npath = "{inbox}"\n[smtp]\nbackend = "maildir"\npath = "{outbox}"\n'


def test_an_outbox_nobody_can_write_keeps_the_emails_queued_and_the_daemon_going(
        tmp_path: Path, database_url: str | None) -> None:
    install = Install(tmp_path, database_url=database_url,
                      backends=MAILDIRS.format(inbox="var/inbox", outbox="/proc/smartacct-outbox"))
    daemon = Daemon(install)
    try:
        daemon.start()
        first = install.drop(request_email(good_fields()))
        wait_for(lambda: "outbox.paused" in install.log())
        second = install.drop(request_email(good_fields(domain="beta.example", customer_email="b@beta.example")))
        wait_for(lambda: install.folder_of(second) == "Processed")   # the daemon keeps handling mail
        assert install.folder_of(first) == "Processed"
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    rows = json.loads(install.cli("outbox", "list", "--json").stdout)
    assert [r["state"] for r in rows] == ["queued", "queued"]       # both reviews wait for a fix
    log = install.log()
    paused = next(line for line in log.splitlines() if "outbox.paused" in line)
    assert "WARNING" in paused and ("cannot write to the outbox /proc/smartacct-outbox: "
                                    "it does not exist and cannot be made there") in paused
    assert "smtp.path must name a folder this user can write" in paused
    assert "Traceback" not in log and "Errno" not in log


def test_config_check_says_in_words_what_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    install = Install(tmp_path, database_url="sqlite:////proc/smartacct/smartacct.db",
                      backends=MAILDIRS.format(inbox="/proc/smartacct-inbox", outbox="a-file/outbox"))
    proc = install.cli("config", "check", check=False)
    assert proc.returncode == 1
    lines = dict(line.split(": FAILED: ", 1) for line in proc.stdout.splitlines() if ": FAILED: " in line)
    assert lines["database"] == ("cannot make the database /proc/smartacct/smartacct.db: "
                                 "no folder can be made in /proc: the file system allows none there "
                                 "(database.url must name a file in a folder this user can write)")
    assert ("database.url: /proc/smartacct/smartacct.db: does not exist yet, and cannot be made: "
            "no folder can be made in /proc: the file system allows none there") in proc.stdout.splitlines()
    assert lines["mailbox (maildir)"].startswith("cannot use the inbox Maildir /proc/smartacct-inbox: ")
    assert "(mailbox.path must name a folder this user can write)" in lines["mailbox (maildir)"]
    assert lines["smtp (maildir)"] == (f"cannot write to the outbox {tmp_path}/a-file/outbox: "
                                       f"{tmp_path}/a-file: it is a file, not a folder "
                                       "(smtp.path must name a folder this user can write)")
    assert "Error" not in proc.stdout and "Errno" not in proc.stdout
    assert not (tmp_path / "var").exists()                           # config check creates nothing


@pytest.mark.parametrize("url, said", [
    ("sqlite:////proc/smartacct/smartacct.db", "cannot make the folder for the database /proc/smartacct/"),
    ("sqlite:////proc/smartacct.db", "cannot open the database /proc/smartacct.db: SQLite says "),
    ("sqlite:///a-file/smartacct.db", "a-file: it is a file, not a folder"),
])
def test_a_database_that_cannot_be_opened_is_one_clear_line(tmp_path: Path, url: str, said: str) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    install = Install(tmp_path, database_url=url)
    proc = install.cli("run", "--once", check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and said in proc.stderr and "database.url" in proc.stderr
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr
    proc = install.cli("requests", "list", check=False)     # which makes nothing: there is nothing yet
    path = url.removeprefix("sqlite:///")
    path = path if path.startswith("/") else f"{tmp_path}/{path}"
    assert proc.returncode == 1 and proc.stderr == (
        f"smartacct: the database {path} does not exist yet (`smartacct run` creates it); "
        f"database.url in the config {install.config}\n")


def test_a_log_file_that_cannot_be_written_is_one_clear_line(tmp_path: Path) -> None:
    install = Install(tmp_path)
    install.config.write_text(install.config.read_text().replace('file = "smartacct.log"',
                                                                 'file = "/proc/smartacct/smartacct.log"'))
    proc = install.cli("run", "--once", check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("smartacct: cannot write the log file /proc/smartacct/smartacct.log: "
                           "it does not exist and cannot be made there "
                           "(logging.file must name a file this user can write)\n")
