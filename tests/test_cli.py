"""The command line's edges (DESIGN §6, issue 12 item 3), as a new user meets them: the command
list, --version, -c anywhere, $SMARTACCT_CONFIG, help that explains, exit statuses, `| head`.

Most run the entry point in this process (e2e.in_process); a few run the real `smartacct`
executable, where a real process is the point: its version, a whole pass, a config error's
exit status, a pipe that closes early.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import re
import subprocess
from pathlib import Path
from typing import Iterator

import click
import peewee
import pytest

from daemon.ops import cli
from e2e import SMARTACCT, Install, good_fields, in_process, request_email, table
from pg import Postgres

COMMANDS = ["run", "process", "check", "requests", "outbox", "quarantine", "stats", "template", "config"]
BAD_KEY = "[workflow]\nno_such_key = 1\n"   # a ConfigError naming workflow.no_such_key


def call(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """main(argv) in this process, in `cwd`, with `env` over the environment."""
    with in_process(env or {}, cwd) as (out, err):
        code = cli.main(list(argv))
    return subprocess.CompletedProcess(["smartacct", *argv], code, out.getvalue(), err.getvalue())


def every_command(group: click.Group = cli.smartacct, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The argv of every group and command, the program itself first."""
    yield path
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))
        else:
            yield (*path, name)


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli.smartacct
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def description(help_text: str) -> str:
    """What --help says about the command: between the usage line and the options."""
    return help_text.split("\n\n", 1)[1].split("\nOptions:", 1)[0].strip()


# --- finding one's way --------------------------------------------------------------------------------

def test_bare_smartacct_lists_the_commands_in_the_contract_order(tmp_path: Path) -> None:
    proc = call(cwd=tmp_path)
    assert proc.returncode == 2                      # called without a command: a usage error, with help
    listed = proc.stderr.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[0] for line in listed] == COMMANDS
    assert all(len(line.split(None, 1)) == 2 and "..." not in line for line in listed)   # each says what it does
    assert not (tmp_path / "var").exists()           # and nothing was made


def test_a_bare_group_lists_its_commands(tmp_path: Path) -> None:
    proc = call("requests", cwd=tmp_path)
    assert proc.returncode == 2
    assert [line.split()[0] for line in proc.stderr.split("\nCommands:\n", 1)[1].splitlines()] == \
        ["list", "show", "cancel"]


def test_the_version_is_the_installed_package_version() -> None:
    proc = subprocess.run([SMARTACCT, "--version"], capture_output=True, text=True, timeout=60)
    version = importlib.metadata.version("smartacct")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"smartacct {version}\n", "")


def test_every_command_has_its_own_help_that_says_more_than_its_name(tmp_path: Path) -> None:
    texts: dict[tuple[str, ...], str] = {}
    for path in every_command():
        proc = call(*path, "--help", cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", path
        text = description(proc.stdout)
        words = set(text.lower().replace(".", " ").replace(",", " ").split())
        assert len(words - set(path)) >= 5, (path, text)
        texts[path] = text
        assert "-c, --config FILE" in proc.stdout, path      # -c is accepted at every level
    assert len(set(texts.values())) == len(texts)            # no two alike
    assert len(texts) == 19 and not (tmp_path / "var").exists()
    short = [command_at(path).get_short_help_str(limit=200) for path in every_command() if path]
    assert all(short) and len(set(short)) == len(short)       # the lines of the command lists, too


# --- where the config comes from ------------------------------------------------------------------------

@pytest.fixture
def configs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A good config, a bad one, and a folder whose ./config.toml is bad too."""
    (tmp_path / "good").mkdir()
    made = Install(tmp_path / "good")
    made.run_once()                    # its database and inbox exist
    good = made.config
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_KEY)
    here = tmp_path / "here"
    here.mkdir()
    (here / "config.toml").write_text(BAD_KEY)
    return good, bad, here


def test_c_is_accepted_before_or_after_the_command(configs: tuple[Path, Path, Path]) -> None:
    good, bad, here = configs
    assert call("requests", "list", cwd=here).returncode == 2                # ./config.toml is read
    for argv in (("-c", str(good), "requests", "list"), ("requests", "list", "-c", str(good)),
                 ("requests", "-c", str(good), "list"), ("--config", str(good), "requests", "list", "--json"),
                 ("-c", str(bad), "requests", "list", "-c", str(good))):   # the last one given counts
        proc = call(*argv, cwd=here)
        assert (proc.returncode, proc.stderr) == (0, ""), argv
    proc = call("-c", str(good), "requests", "list", "-c", str(bad), cwd=here)
    assert proc.returncode == 2 and "workflow.no_such_key" in proc.stderr


def test_smartacct_config_comes_after_c_and_before_the_local_file(configs: tuple[Path, Path, Path]) -> None:
    good, bad, here = configs
    assert call("requests", "list", cwd=here, env={"SMARTACCT_CONFIG": str(good)}).returncode == 0
    proc = call("requests", "list", "-c", str(bad), cwd=here, env={"SMARTACCT_CONFIG": str(good)})
    assert proc.returncode == 2 and "workflow.no_such_key" in proc.stderr
    assert call("requests", "list", "-c", str(good), cwd=here, env={"SMARTACCT_CONFIG": str(bad)}).returncode == 0


def test_without_any_config_the_embedded_default_is_used(tmp_path: Path) -> None:
    proc = call("config", "check", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0].startswith("config: none: the embedded default")
    assert f"database.url: {tmp_path}/var/smartacct.db: does not exist yet" in proc.stdout
    assert "mailbox (maildir): ok" in proc.stdout and "smtp (maildir): ok" in proc.stdout
    assert list(tmp_path.iterdir()) == []


# --- exit statuses ----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, said", [
    (("nope",), "No such command 'nope'"),
    (("requests", "list", "--bogus"), "No such option '--bogus'"),
    (("outbox", "retry"), "Missing argument 'ID...'"),
    (("outbox", "retry", "x"), "'x' is not a valid integer"),
    (("outbox", "list", "--state", "lost"), "'lost' is not one of"),
    (("template", "--lang", "fr"), "'fr' is not one of"),
    (("requests", "list", "--state", "bogus"),
     "'bogus' is not one of 'awaiting_confirmation', 'pending_acceptance', 'active', 'rejected', 'expired', "
     "'declined', 'cancelled', 'lapsed'"),
    (("requests", "show", "SA-1"), "'SA-1' is not a request reference"),
    (("requests", "cancel", "hello"), "'hello' is not a request reference"),
    (("outbox", "show", "x"), "'x' is not a valid integer"),
    (("stats", "--since", "30x"), "'30x' is not a duration like 30d, 12h"),
    (("stats", "--since", "99999999999999999999d"), "is not a duration"),
    (("process",), "Missing argument 'FILE...'"),
    (("run", "--once", "extra"), "Got unexpected extra argument"),
])
def test_a_usage_error_exits_2_and_says_what_is_wrong(tmp_path: Path, argv: tuple[str, ...], said: str) -> None:
    proc = call(*argv, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert said in proc.stderr and proc.stderr.startswith("Usage: smartacct") and "Traceback" not in proc.stderr
    assert not (tmp_path / "var").exists()                  # refused before anything was opened


def test_a_config_error_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[mailbox]\nport = "many"\n')
    proc = subprocess.run([SMARTACCT, "-c", str(bad), "requests", "list"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("smartacct: config error: mailbox.port") and proc.stderr.count("\n") == 1


def test_a_failing_command_exits_with_the_status_its_error_carries(tmp_path: Path) -> None:
    install = Install(tmp_path)
    install.run_once()
    proc = install.cli("requests", "cancel", "SA-000099", check=False)
    assert (proc.returncode, proc.stderr) == (1, "smartacct: no request SA-000099\n")
    proc = install.cli("requests", "show", "SA-000099", check=False)
    assert (proc.returncode, proc.stderr) == (1, "smartacct: no request SA-000099\n")


# --- the real executable ------------------------------------------------------------------------------

def test_the_executable_makes_a_whole_pass(tmp_path: Path) -> None:
    install = Install(tmp_path)
    name = install.drop(request_email(good_fields()))
    proc = subprocess.run(install.command("-c", str(install.config), "run", "--once"), capture_output=True,
                          text=True, timeout=120, cwd=install.root)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert install.folder_of(name) == "Processed"
    [review] = install.sent()
    assert "Please review" in review.subject
    assert "daemon.started" in install.log() and "daemon.stopped" in install.log()


def test_output_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    """`smartacct requests list | head -2` over thousands of rows: head leaves after two lines, and
    smartacct ends without a word on stderr (no BrokenPipeError traceback)."""
    install = Install(tmp_path)
    install.run_once()                 # makes the database
    _many_requests(install, 3000)      # far more than a pipe buffer holds
    script = f'"{SMARTACCT}" -c "{install.config}" requests list 2>"$1" | head -2; echo "${{PIPESTATUS[0]}}" >"$2"'
    err, status = install.root / "stderr", install.root / "status"
    proc = subprocess.run(["bash", "-c", script, "sh", str(err), str(status)], capture_output=True, text=True,
                          timeout=120, cwd=install.root)
    header, first = proc.stdout.splitlines()
    assert header.startswith("REF  ") and first.startswith("SA-003000  expired") and proc.stdout.count("\n") == 2
    assert err.read_text() == ""
    assert status.read_text().strip() == "1"


def _many_requests(install: Install, n: int) -> None:
    from daemon import config as config_mod
    from models.base import database_proxy
    from models.db import open_database
    from models.request import Request

    saved = database_proxy.obj
    db = open_database(config_mod.load(install.config).database.url)
    try:
        now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        rows = [{"state": "expired", "language": "en", "partner_email": "p@partner.example",
                 "account_name": f"Company {i}", "customer_email": f"c@d{i}.example",
                 "account_domain": f"d{i}.example", "created_at": now, "updated_at": now} for i in range(n)]
        with db.atomic():
            for batch in peewee.chunked(rows, 100):
                Request.insert_many(batch).execute()
    finally:
        db.close()
        database_proxy.initialize(saved)


# --- what the admin reads (issue 15) ------------------------------------------------------------------

LONG = "customer.with.a.very.long.address.for.approvals@subsidiary.department.long-domain.example"


def starts(header: str) -> list[int]:
    """Where each column of a table starts, by its header."""
    return [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]


def test_requests_list_has_a_header_and_columns_that_stay_aligned(tmp_path: Path) -> None:
    install = Install(tmp_path)
    install.drop(request_email(good_fields()))
    install.drop(request_email(good_fields("subsidiary.department.long-domain.example", customer_email=LONG,
                                           account_name="Ünïcode Långname Robotics International Holdings")))
    install.run_once()
    text = install.cli("requests", "list").stdout
    header, *lines = text.splitlines()
    assert header.split() == ["REF", "STATE", "ACCOUNT", "DOMAIN", "CUSTOMER", "PARTNER", "CREATED"]
    assert len(lines) == 2 and LONG not in text and "…" in text            # cut, not spilling over
    for line in lines:                                                     # every column starts under its header
        assert all(line[at - 2:at] == "  " and line[at] != " " for at in starts(header)[1:]), line
    rows = table(text)
    assert [r["ACCOUNT"] for r in rows] == ["Ünïcode Långname Robotics I…", "Acme Robotics"]   # 28 wide
    assert rows[1]["PARTNER"] == "paula@partner.example" and rows[1]["CUSTOMER"] == "carla@acme.example"
    assert rows[0]["CUSTOMER"].endswith("…") and LONG.startswith(rows[0]["CUSTOMER"][:-1])
    assert [r["state"] for r in install.requests("--state", "awaiting_confirmation")] == ["awaiting_confirmation"] * 2
    assert install.requests("--state", "active") == []


def test_requests_show_prints_every_field_of_its_json(tmp_path: Path) -> None:
    install = Install(tmp_path)
    install.drop(request_email(good_fields(note_to_customer="Please accept soon.")))
    install.run_once()
    data = install.show("SA-000001")
    text = install.cli("requests", "show", "SA-000001").stdout
    lines = text.splitlines()
    for key, value in data.items():
        if key in ("events", "emails"):
            continue
        [line] = [li for li in lines if li.split(" ", 1)[0] == key]
        shown = line[len(key):].strip()
        expected = ", ".join(value) if isinstance(value, list) else "-" if value in (None, "") else str(value)
        assert shown == expected, key
    assert "user_emails        dev1@acme.example, dev2@acme.example" in lines and "['" not in text
    assert "note_to_users      Licences are under Inventory." in lines and "reminders_sent     0" in lines
    timeline = table(text.split("\ntimeline:\n", 1)[1].split("\n\nemails:\n", 1)[0])
    assert [e["EVENT"] for e in timeline] == [e["name"] for e in data["events"]]
    emails = table(text.split("\n\nemails:\n", 1)[1])
    assert [(e["ID"], e["KIND"], e["TO"], e["STATE"]) for e in emails] == \
        [(str(e["id"]), e["kind"], e["to"], e["state"]) for e in data["emails"]]


def test_a_malformed_reference_is_told_apart_from_an_unknown_one(tmp_path: Path) -> None:
    install = Install(tmp_path)
    install.run_once()
    proc = install.cli("requests", "show", "SA-1", check=False)
    assert proc.returncode == 2 and "'SA-1' is not a request reference" in proc.stderr
    proc = install.cli("requests", "show", "SA-999999", check=False)
    assert (proc.returncode, proc.stderr) == (1, "smartacct: no request SA-999999\n")


def test_the_blank_form_ends_with_a_new_line(tmp_path: Path) -> None:
    for lang in ("en", "de"):
        out = call("template", "--lang", lang, cwd=tmp_path).stdout
        assert out.endswith(": \n") and not out.endswith("\n\n")


REFUSING = [("requests", "list"), ("requests", "show", "SA-000001"), ("requests", "cancel", "SA-000001"),
            ("outbox", "list"), ("outbox", "show", "1"), ("outbox", "retry", "1"), ("quarantine", "list"),
            ("quarantine", "retry", "1"), ("check",), ("stats",)]


def test_commands_other_than_run_and_process_refuse_a_database_or_inbox_not_made_yet(tmp_path: Path) -> None:
    install = Install(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv in REFUSING:
        proc = install.cli(*argv, check=False)
        assert (proc.returncode, proc.stdout) == (1, ""), argv
        assert proc.stderr == (f"smartacct: the database {tmp_path}/var/smartacct.db does not exist yet "
                               f"(`smartacct run` creates it); database.url in the config {install.config}\n"), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == before            # not even the log file

    eml = tmp_path / "request.eml"
    eml.write_bytes(bytes(request_email(good_fields())))
    assert install.cli("process", str(eml)).stdout == f"{eml}: processed\n"   # process makes the database
    assert (tmp_path / "var" / "smartacct.db").is_file() and not install.inbox.exists()
    for argv in REFUSING:
        proc = install.cli(*argv, check=False)
        assert proc.returncode == 1 and proc.stderr == (
            f"smartacct: the inbox Maildir {install.inbox} does not exist yet (`smartacct run` creates it); "
            f"mailbox.path in the config {install.config}\n"), argv
    assert not install.inbox.exists()
    install.run_once()                                                     # run makes the inbox
    assert install.inbox.is_dir() and len(table(install.cli("requests", "list").stdout)) == 1


def test_a_postgresql_database_without_our_tables_is_refused_too(tmp_path: Path, postgres: Postgres) -> None:
    postgres.sql("CREATE DATABASE admin_empty")
    try:
        install = Install(tmp_path, database_url=postgres.url("admin_empty"))
        install.drop(request_email(good_fields()))                          # the inbox exists
        proc = install.cli("requests", "list", check=False)
        assert proc.returncode == 1
        assert proc.stderr.startswith("smartacct: the database admin_empty on 127.0.0.1 has no smartacct tables yet")
        assert "database.url in the config" in proc.stderr and "@" not in proc.stderr
        assert "database: ok (no smartacct tables yet" in install.cli("config", "check").stdout
        install.run_once()
        assert [r["state"] for r in install.requests()] == ["awaiting_confirmation"]
    finally:
        postgres.sql("DROP DATABASE admin_empty WITH (FORCE)")


def test_config_check_names_the_file_and_every_path_and_creates_nothing(tmp_path: Path) -> None:
    install = Install(tmp_path)
    install.drop(request_email(good_fields()))
    install.run_once()                                                     # every path exists now
    typo = install.backends.replace('path = "var/inbox"', 'path = "var/inbx"')
    install.config.write_text(install.config.read_text().replace(install.backends, typo))
    install.log_file.unlink()
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    lines = install.cli("config", "check").stdout.splitlines()
    assert lines[:5] == [
        f"config: {install.config}",
        f"mailbox.path: {tmp_path}/var/inbx: does not exist yet (`smartacct run` creates it)",
        f"smtp.path: {tmp_path}/var/outbox: exists",
        f"database.url: {tmp_path}/var/smartacct.db: exists",
        f"logging.file: {tmp_path}/smartacct.log: does not exist yet (`smartacct run` creates it)",
    ]
    assert lines[5:] == ["database: ok",
                         "mailbox (maildir): ok (the inbox does not exist yet: `smartacct run` creates it; "
                         "mail delivered elsewhere is never read)",
                         "smtp (maildir): ok"]
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before          # reports, never creates

    deep = Path("/nonexistent-smartacct/deep/inbox")
    install.config.write_text(install.config.read_text().replace('"var/inbx"', f'"{deep}"'))
    out = install.cli("config", "check").stdout
    assert f"mailbox.path: {deep}: does not exist yet" in out and not Path("/nonexistent-smartacct").exists()
