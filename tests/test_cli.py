"""The command line's edges (DESIGN §6, issue 12 item 3), as a new user meets them: the command
list, --version, -c anywhere, $SMARTACCT_CONFIG, help that explains, exit statuses, `| head`.

Most run the entry point in this process (e2e.in_process); a few run the real `smartacct`
executable, where a real process is the point: its version, a whole pass, a config error's
exit status, a pipe that closes early.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import subprocess
from pathlib import Path
from typing import Iterator

import click
import peewee
import pytest

from daemon.ops import cli
from e2e import SMARTACCT, Install, good_fields, in_process, request_email

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
