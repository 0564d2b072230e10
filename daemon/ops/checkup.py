"""What `smartacct config check` finds (DESIGN §6): the config it read, every path it resolves
to, and whether each connection works. It reports and never creates (issue 15): a path that
does not exist yet is named as such, with whether its folder lets `smartacct run` make it; a
probe file written to learn whether a folder is writable is removed at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import peewee

from daemon.config import Config
from daemon.errors import DatabaseError, MailboxError, SmartacctError, os_reason
from daemon.mail.maildir import check_inbox, unwritable
from models.db import probe, sqlite_path
from models.migrations import LATEST

CREATES = "`smartacct run` creates it"


def report(cfg: Config, config_file: Path | None) -> tuple[list[str], bool]:
    """The lines of the report, and whether everything is usable."""
    lines = [f"config: {config_file}" if config_file else
             "config: none: the embedded default (no -c, no $SMARTACCT_CONFIG, no ./config.toml here)"]
    ok = True
    for key, path, kind in _paths(cfg):
        said, usable = _path_state(path, kind)
        lines.append(f"{key}: {path}: {said}")
        ok &= usable
    db_path = sqlite_path(cfg.database.url)
    if db_path is None:
        lines.append(f"database.url: {_without_password(cfg.database.url)}")

    checks: list[tuple[str, Callable[[], str]]] = [
        ("database", lambda: _database(cfg)),
        (f"mailbox ({cfg.mailbox.backend})", lambda: _mailbox(cfg)),
        (f"smtp ({cfg.smtp.backend})", lambda: _smtp(cfg)),
    ]
    for name, attempt in checks:
        try:
            note = attempt()
        except SmartacctError as exc:
            ok = False
            lines.append(f"{name}: FAILED: {exc}")
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            ok = False
            lines.append(f"{name}: FAILED: the database is busy or unreachable: {' '.join(str(exc).split())}")
        except OSError as exc:
            ok = False
            lines.append(f"{name}: FAILED: {os_reason(exc)}")
        except Exception as exc:  # config check reports anything, in plain words, and goes on
            ok = False
            lines.append(f"{name}: FAILED: {type(exc).__name__}: {exc}")
        else:
            lines.append(f"{name}: ok{f' ({note})' if note else ''}")
    return lines, ok


def _paths(cfg: Config) -> list[tuple[str, Path, str]]:
    """(config key, resolved path, "folder" or "file") for each path this config uses."""
    paths = []
    if cfg.mailbox.backend == "maildir":
        paths.append(("mailbox.path", cfg.mailbox.path, "folder"))
    if cfg.smtp.backend == "maildir":
        paths.append(("smtp.path", cfg.smtp.path, "folder"))
    db_path = sqlite_path(cfg.database.url)
    if db_path is not None and db_path != ":memory:":
        paths.append(("database.url", Path(db_path), "file"))
    if cfg.logging.file:
        paths.append(("logging.file", Path(cfg.logging.file), "file"))
    return paths


def _path_state(path: Path, kind: str) -> tuple[str, bool]:
    """What is at `path`, in words, and whether the daemon can use it."""
    if path.exists():
        if kind == "folder" and not path.is_dir():
            return "is a file, not a folder", False
        if kind == "file" and path.is_dir():
            return "is a folder, not a file", False
        if kind == "file":
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_APPEND))   # opened, not written: unchanged
            except OSError as exc:
                return f"exists, but cannot be written: {os_reason(exc, path)}", False
        return "exists", True
    folder = path.parent if kind == "file" else path
    problem = unwritable(folder)
    if problem is not None:
        return f"does not exist yet, and cannot be made: {problem}", False
    return f"does not exist yet ({CREATES})", True


def _database(cfg: Config) -> str:
    version = probe(cfg.database.url)
    if version is None:
        path = sqlite_path(cfg.database.url)
        if path is not None and path != ":memory:":
            problem = unwritable(Path(path).parent)
            if problem is not None:
                raise DatabaseError(f"cannot make the database {path}: {problem} "
                              "(database.url must name a file in a folder this user can write)")
            return f"not created yet: {CREATES}"
        return "no smartacct tables yet: `smartacct run` creates them"
    if version < LATEST:
        return f"schema version {version}: `smartacct run` upgrades it to {LATEST}"
    return ""


def _mailbox(cfg: Config) -> str:
    if cfg.mailbox.backend == "maildir":
        if not cfg.mailbox.path.exists():
            problem = unwritable(cfg.mailbox.path)
            if problem is not None:
                raise MailboxError(f"cannot use the inbox Maildir {cfg.mailbox.path}: {problem} "
                              "(mailbox.path must name a folder this user can write)")
            return f"the inbox does not exist yet: {CREATES}; mail delivered elsewhere is never read"
        check_inbox(cfg.mailbox.path)
        return ""
    from daemon.mail.imap import ImapMailbox

    _try(ImapMailbox(cfg.mailbox, _NoCursor()))
    return ""


def _smtp(cfg: Config) -> str:
    if cfg.smtp.backend == "smtp":
        from daemon.mail.smtp import SmtpTransport

        _try(SmtpTransport(cfg.smtp))
        return ""
    from daemon.mail.maildir import MaildirTransport

    _try(MaildirTransport(cfg.smtp.path))
    return "" if cfg.smtp.path.exists() else f"the outbox does not exist yet: {CREATES}"


class _NoCursor:
    """The IMAP check reads no position from the database, and writes none."""

    def load(self) -> tuple[int, int] | None:
        return None

    def save(self, uidvalidity: int, last_uid: int) -> None:
        pass


def _try(backend: Any) -> None:
    check = getattr(backend, "check", None)
    if check is not None:
        check()
    close = getattr(backend, "close", None)
    if close is not None:
        close()


def _without_password(url: str) -> str:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return url.replace(f":{parsed.password}@", ":***@", 1)
