"""Ordered, numbered schema steps, applied at start; never drop-and-recreate.

Each step is SQL written once and never edited after release: a later change is a
new step. `{pk}`, `{blob}` and `{ts}` stand for the dialect's spelling.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

import peewee

from models.base import execute_sql
from models.outbox import message_id_hash, redacted

_DIALECT = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "ts": "DATETIME", "bigint": "INTEGER"},
    "postgres": {"pk": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "ts": "TIMESTAMP", "bigint": "BIGINT"},
}

Step = str | Callable[[peewee.Database], None]   # SQL, or Python where SQL cannot say it

STEPS: list[tuple[int, str, list[Step]]] = [
    (1, "initial schema", [
        """CREATE TABLE request (
            id {pk},
            state VARCHAR(32) NOT NULL,
            language VARCHAR(2) NOT NULL,
            partner_email VARCHAR(320) NOT NULL,
            account_name TEXT NOT NULL,
            customer_email VARCHAR(320) NOT NULL,
            account_domain VARCHAR(255) NOT NULL,
            note_to_customer TEXT NOT NULL DEFAULT '',
            user_emails TEXT NOT NULL DEFAULT '[]',
            note_to_users TEXT NOT NULL DEFAULT '',
            created_at {ts} NOT NULL,
            updated_at {ts} NOT NULL,
            review_expires_at {ts},
            confirmed_at {ts},
            expires_at {ts},
            reminders_sent INTEGER NOT NULL DEFAULT 0,
            accepted_at {ts},
            closed_at {ts},
            due_at {ts}
        )""",
        "CREATE INDEX request_due ON request (due_at) WHERE due_at IS NOT NULL",
        "CREATE INDEX request_state ON request (state, id)",
        # At most one open or active request per account domain, even with several instances.
        """CREATE UNIQUE INDEX request_open_domain ON request (account_domain)
           WHERE state IN ('awaiting_confirmation', 'pending_acceptance', 'active')""",
        """CREATE TABLE reply_token (
            id {pk},
            request_id {bigint} NOT NULL REFERENCES request (id) ON DELETE CASCADE,
            token_hash VARCHAR(64) NOT NULL UNIQUE,
            party VARCHAR(16) NOT NULL,
            actions VARCHAR(64) NOT NULL,
            issued_for_state VARCHAR(32) NOT NULL,
            issued_at {ts} NOT NULL,
            used_at {ts}
        )""",
        "CREATE INDEX reply_token_request ON reply_token (request_id)",
        """CREATE TABLE incoming_message (
            id {pk},
            key VARCHAR(400) NOT NULL UNIQUE,
            message_id TEXT,
            sender VARCHAR(320),
            subject TEXT NOT NULL DEFAULT '',
            size INTEGER NOT NULL DEFAULT 0,
            mailbox_key TEXT NOT NULL DEFAULT '',
            received_at {ts} NOT NULL,
            handled_at {ts},
            outcome VARCHAR(16),
            folder VARCHAR(16),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            request_id {bigint}
        )""",
        "CREATE INDEX incoming_message_outcome ON incoming_message (outcome, id)",
        "CREATE INDEX incoming_message_sender ON incoming_message (sender, received_at)",
        """CREATE TABLE outbox (
            id {pk},
            request_id {bigint},
            kind VARCHAR(40) NOT NULL,
            recipient VARCHAR(320) NOT NULL,
            message_id VARCHAR(255) NOT NULL UNIQUE,
            raw {blob} NOT NULL,
            state VARCHAR(16) NOT NULL DEFAULT 'queued',
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at {ts} NOT NULL,
            next_try_at {ts} NOT NULL,
            sent_at {ts},
            last_error TEXT
        )""",
        "CREATE INDEX outbox_due ON outbox (next_try_at) WHERE state = 'queued'",
        "CREATE INDEX outbox_state ON outbox (state, id)",
        "CREATE INDEX outbox_recipient ON outbox (recipient, created_at)",
        "CREATE INDEX outbox_request ON outbox (request_id)",
        """CREATE TABLE event (
            id {pk},
            request_id {bigint} NOT NULL,
            at {ts} NOT NULL,
            name VARCHAR(64) NOT NULL,
            detail TEXT NOT NULL DEFAULT '{{}}'
        )""",
        "CREATE INDEX event_request ON event (request_id, id)",
        """CREATE TABLE mailbox_cursor (
            name VARCHAR(400) PRIMARY KEY,
            uidvalidity {bigint} NOT NULL,
            last_uid {bigint} NOT NULL
        )""",
    ]),
    (2, "outbox topic for the loop guard", [
        # What an answer is about (e.g. the problems of a rejection), so the same one goes
        # to a sender at most once a day (loop guard).
        "ALTER TABLE outbox ADD COLUMN topic VARCHAR(200)",
    ]),
    (3, "index for the one-open-request-per-domain look-up", [
        # The partial unique index cannot serve `state IN (?, ?, ?)` with bound parameters
        # (SQLite), so every new request scanned the table: quadratic over a backlog.
        "CREATE INDEX request_domain ON request (account_domain)",
        # The partial outbox_due lost to outbox_state in SQLite's planner (and then a sort of the
        # whole queue per claimed row); a composite index answers the claim in order.
        "DROP INDEX outbox_due",
        "CREATE INDEX outbox_claim ON outbox (state, next_try_at, id)",
    ]),
    (4, "attempt ledger, written before a message is parsed", [
        # Keyed by the hash of the bytes, known before parsing; incoming_message stays the
        # idempotency record (Message-ID), written in the message's own transaction.
        """CREATE TABLE attempt (
            raw_hash VARCHAR(64) PRIMARY KEY,
            mailbox_key TEXT NOT NULL,
            holder VARCHAR(120),
            held_since {ts},
            first_seen {ts} NOT NULL,
            failures INTEGER NOT NULL DEFAULT 0,
            interrupted INTEGER NOT NULL DEFAULT 0,
            last_error TEXT
        )""",
    ]),
    (5, "reply codes unreadable at rest: Message-IDs hashed, sent emails redacted", [
        "ALTER TABLE outbox RENAME COLUMN raw TO body",
        "ALTER TABLE outbox RENAME COLUMN message_id TO message_id_hash",
        "ALTER TABLE reply_token ADD COLUMN message_id_hash VARCHAR(64)",
        "CREATE UNIQUE INDEX reply_token_message ON reply_token (message_id_hash)",
        # The hourly cap per address counts what went out in the last hour (DESIGN §4).
        "CREATE INDEX outbox_sent ON outbox (recipient, sent_at)",
        lambda db: _hash_and_redact(db),
    ]),
    (6, "outbox: the Maildir file an email became", [
        # `outbox list` relates its rows to the files in smtp.path (issue 15).
        "ALTER TABLE outbox ADD COLUMN maildir_file VARCHAR(255)",
    ]),
    (7, "outbox: who holds a claimed batch (the lease)", [
        # The drain claims a batch of due rows at once, pushing their next_try_at forward by a
        # lease; leased_by names the process (App.instance) so a successor can take back the
        # rows of a holder that died at once instead of waiting out the lease (issue 16).
        "ALTER TABLE outbox ADD COLUMN leased_by VARCHAR(120)",
        "CREATE INDEX outbox_lease ON outbox (leased_by) WHERE leased_by IS NOT NULL",
    ]),
]

LATEST = STEPS[-1][0]   # the schema version a fresh database gets


def _hash_and_redact(db: peewee.Database) -> None:
    """Step 5 for rows written before it: ids replaced by their hash, the bodies of sent emails redacted."""
    param = db.param
    rows = execute_sql(db, "SELECT id, message_id_hash, body, state FROM outbox").fetchall()
    for row_id, message_id, body, state in rows:
        changed = redacted(bytes(body)) if state == "sent" else bytes(body)
        execute_sql(db, f"UPDATE outbox SET message_id_hash = {param}, body = {param} WHERE id = {param}",
                    (message_id_hash(message_id), changed, row_id))


def dialect_of(db: peewee.Database) -> str:
    return "postgres" if isinstance(db, peewee.PostgresqlDatabase) else "sqlite"


def migrate(db: peewee.Database) -> list[int]:
    """Apply the steps the database has not seen yet; returns their numbers."""
    words = _DIALECT[dialect_of(db)]
    if dialect_of(db) == "postgres":
        # Two instances starting together: one migrates, the other waits here.
        execute_sql(db, "SELECT pg_advisory_lock(7450001)")
    try:
        with db.atomic():
            execute_sql(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                        f"name TEXT NOT NULL, applied_at {words['ts']} NOT NULL)")
        applied = {row[0] for row in execute_sql(db, "SELECT version FROM schema_version").fetchall()}
        done = []
        for version, name, statements in STEPS:
            if version in applied:
                continue
            with db.atomic():
                for step in statements:
                    if callable(step):
                        step(db)
                    else:
                        execute_sql(db, step.format(**words))
                execute_sql(
                    db,
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)" % (db.param, db.param, db.param),
                    (version, name, dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)),
                )
            done.append(version)
        return done
    finally:
        if dialect_of(db) == "postgres":
            execute_sql(db, "SELECT pg_advisory_unlock(7450001)")
