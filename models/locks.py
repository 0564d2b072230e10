"""Coordination between several instances sharing one PostgreSQL database (DESIGN §8).

Advisory locks are taken without waiting and belong to the database session, so a
killed instance lets go of everything at once, with no lease to expire. SQLite serves
one daemon only (DESIGN §8), so there every lock is simply granted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from pathlib import Path
from typing import Iterator, Sequence

import peewee

from models.base import execute_sql


def is_postgres(db: peewee.Database) -> bool:
    return isinstance(db, peewee.PostgresqlDatabase)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_try_advisory_lock."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8", "replace")).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def exclusive(db: peewee.Database, name: str) -> Iterator[bool]:
    """True when this instance holds `name` for the duration; False when another one does."""
    got = try_lock(db, name)
    try:
        yield got
    finally:
        if got:
            unlock(db, name)


def try_lock(db: peewee.Database, name: str) -> bool:
    """Take `name` without waiting and keep it until unlock(); True on SQLite."""
    if not is_postgres(db):
        return True
    row = execute_sql(db, "SELECT pg_try_advisory_lock(%s)", (lock_key(name),)).fetchone()
    return bool(row and row[0])


def unlock(db: peewee.Database, name: str) -> None:
    if is_postgres(db):
        execute_sql(db, "SELECT pg_advisory_unlock(%s)", (lock_key(name),))


def try_lock_many(db: peewee.Database, names: Sequence[str]) -> set[str]:
    """try_lock() for a batch in one statement: the names this instance now holds (all on SQLite)."""
    if not is_postgres(db) or not names:
        return set(names)
    keys = {lock_key(name): name for name in names}
    rows = execute_sql(db, "SELECT k FROM unnest(%s::bigint[]) AS k WHERE pg_try_advisory_lock(k)",
                       (list(keys),)).fetchall()
    return {keys[row[0]] for row in rows}


def unlock_many(db: peewee.Database, names: Sequence[str]) -> None:
    """unlock() for a batch in one statement."""
    if is_postgres(db) and names:
        execute_sql(db, "SELECT count(*) FROM unnest(%s::bigint[]) AS k WHERE pg_advisory_unlock(k)",
                    ([lock_key(name) for name in names],))


def lock(db: peewee.Database, name: str) -> None:
    """Take `name`, waiting for it, and keep it until unlock(); nothing on SQLite.
    For a lock that only its owner keeps and others take for a moment (daemon.engine.outbox)."""
    if is_postgres(db):
        execute_sql(db, "SELECT pg_advisory_lock(%s)", (lock_key(name),))


def process_gone(instance: str) -> bool:
    """Whether the process an App.instance names ("host:pid:random") has ended, as far as this
    host can tell: False for another host's process, or when its pid is taken (maybe reused)."""
    host, _, rest = instance.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname()[:60] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:      # EPERM: a process of another user has it
        return False
    try:                 # a killed child its parent has not reaped yet is a zombie: gone all the same
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] in ("Z", "X")
