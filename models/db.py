"""open_database(url): connect, set pragmas, bind the models, run migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import peewee

from daemon.errors import DatabaseError, os_reason
from models.base import database_proxy
from models.migrations import migrate


def open_database(url: str) -> peewee.Database:
    """The one process-wide setup: every model is bound to the database opened here.

    A SQLite file that cannot be opened or made is a DatabaseError naming the path; a
    PostgreSQL server that does not answer stays peewee's OperationalError, which callers
    treat as "away for now" and retry.
    """
    db = _connect(url)
    database_proxy.initialize(db)
    try:
        db.connect(reuse_if_open=True)
    except peewee.OperationalError as exc:
        if isinstance(db, peewee.SqliteDatabase):
            raise DatabaseError(f"cannot open the database {db.database}: SQLite says {exc} "
                                f"({_WHERE})") from None
        raise
    migrate(db)
    return db


_WHERE = "database.url must name a file in a folder this user can write"


def _connect(url: str) -> peewee.Database:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path != ":memory:":
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
