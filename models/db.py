"""open_database(url): connect, set pragmas, bind the models, run migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import peewee

from daemon.errors import DatabaseError, NotCreated, os_reason
from models.base import database_proxy
from models.migrations import migrate


def open_database(url: str, *, create: bool = True) -> peewee.Database:
    """The one process-wide setup: every model is bound to the database opened here.

    A SQLite file that cannot be opened or made is a DatabaseError naming the path; a
    PostgreSQL server that does not answer stays peewee's OperationalError, which callers
    treat as "away for now" and retry. With create=False (the admin commands) a database
    without our tables is a DatabaseError instead of a new empty one: a command run with
    the wrong config must not start a second, empty installation.
    """
    path = sqlite_path(url)
    if not create and path is not None and path != ":memory:" and not Path(path).is_file():
        raise NotCreated(f"the database {path} does not exist yet (`smartacct run` creates it)")
    db = _connect(url, create=create)
    database_proxy.initialize(db)
    try:
        db.connect(reuse_if_open=True)
    except peewee.OperationalError as exc:
        if isinstance(db, peewee.SqliteDatabase):
            raise DatabaseError(f"cannot open the database {db.database}: SQLite says {exc} "
                                f"({_WHERE})") from None
        raise
    if not create and not db.table_exists("schema_version"):
        db.close()
        raise NotCreated(f"the database {path or _name(url)} has no smartacct tables yet "
                            "(`smartacct run` creates them)")
    migrate(db)
    return db


def probe(url: str) -> int | None:
    """For `config check`: the schema version of the database at `url`, None when it has none of
    our tables yet (or, for SQLite, no file). Connects, reads, and creates and migrates nothing."""
    path = sqlite_path(url)
    if path is not None and path != ":memory:" and not Path(path).is_file():
        return None
    db = _connect(url, create=False)
    try:
        db.connect()
    except peewee.OperationalError as exc:
        if isinstance(db, peewee.SqliteDatabase):
            raise DatabaseError(f"cannot open the database {db.database}: SQLite says {exc} ({_WHERE})") from None
        raise
    try:
        if not db.table_exists("schema_version"):
            return None
        row = db.execute_sql("SELECT MAX(version) FROM schema_version").fetchone()  # type: ignore[no-untyped-call]
        return int(row[0]) if row and row[0] is not None else None
    finally:
        db.close()


def sqlite_path(url: str) -> str | None:
    """The file a sqlite:/// URL names (":memory:" for none); None for any other database."""
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else None


def _name(url: str) -> str:
    """A PostgreSQL URL without its password, to name it in a message."""
    parsed = urlparse(url)
    return f"{unquote(parsed.path.lstrip('/'))} on {parsed.hostname or 'localhost'}"


_WHERE = "database.url must name a file in a folder this user can write"


def _connect(url: str, create: bool = True) -> peewee.Database:
    path = sqlite_path(url)
    if path is not None:
        if path != ":memory:" and create:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"cannot make the folder for the database {path}: {os_reason(exc)} "
                                    f"({_WHERE})") from None
        # WAL lets `requests list` read while the daemon writes; NORMAL is durable at checkpoints
        # and never corrupts; busy_timeout rides out a CLI write racing the daemon.
        return _SqliteDatabase(path, pragmas={
            "journal_mode": "wal",
            "synchronous": "normal",
            "foreign_keys": 1,
            "busy_timeout": 30_000,
        })
    parsed = urlparse(url)
    return peewee.PostgresqlDatabase(
        unquote(parsed.path.lstrip("/")),
        user=unquote(parsed.username or "") or None,
        password=unquote(parsed.password or "") or None,
        host=parsed.hostname or None,
        port=parsed.port or None,
        prefer_psycopg3=True,
    )


class _SqliteDatabase(peewee.SqliteDatabase):
    """Every transaction takes the write lock when it begins (BEGIN IMMEDIATE).

    A deferred transaction that reads and then writes cannot wait for a lock another
    process holds (WAL returns SQLITE_BUSY at once); an immediate one waits busy_timeout.
    So an admin command next to the running daemon waits its turn instead of failing.
    """

    def atomic(self, *args: Any, **kwargs: Any) -> Any:
        if not args and "lock_type" not in kwargs:
            kwargs["lock_type"] = "IMMEDIATE"
        return super().atomic(*args, **kwargs)
