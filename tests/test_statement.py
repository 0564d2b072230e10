"""models.statement: SQL built once per statement shape gives what the same peewee query gives,
on SQLite and PostgreSQL (issue 16)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from models.db import open_database
from models.event import Event
from models.message import IncomingMessage
from models.request import Request
from models.statement import Slots, Statement, create, insert

pytestmark = pytest.mark.both_databases

AT = dt.datetime(2026, 12, 8, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))


@pytest.fixture
def db(tmp_path: Path, database_url: str | None) -> Iterator[peewee.Database]:
    database = open_database(database_url or f"sqlite:///{tmp_path / 'statement.db'}")
    yield database
    database.close()


def test_values_pass_through_the_fields_converters_both_ways(db: peewee.Database) -> None:
    req = create(Request, state="active", language="en", partner_email="p@partner.example",
                 account_name="Acme\x00", customer_email="c@acme.example", account_domain="acme.example",
                 created_at=AT, updated_at=AT)
    assert isinstance(req.id, int) and req.ref == f"SA-{req.id:06d}"
    stored = Request.get_by_id(req.id)
    assert stored.account_name == "Acme\ufffd"                       # SafeTextField: NUL replaced
    assert stored.created_at == AT and stored.created_at.tzinfo == dt.timezone.utc
    assert stored.reminders_sent == 0 and stored.user_emails == []   # the model's defaults
    when = Statement(lambda s: Request.select(Request.created_at, Request.account_domain)
                     .where((Request.id == s.id) & Request.state.in_(["active", "pending_acceptance"])))
    assert when.rows(id=req.id) == [(AT, "acme.example")]             # aware UTC, like peewee's own select
    assert when.first(id=req.id + 1) is None


def test_a_statement_is_built_once_and_binds_each_execution(db: peewee.Database) -> None:
    built = []

    def build(s: Slots) -> peewee.Query:
        built.append(1)
        return Event.delete().where(Event.name == s.name)

    gone = Statement(build)
    for i in range(20):
        insert(Event, request_id=1, at=AT, name=f"e{i % 2}", detail_json="{}")
    assert gone.run(name="e0") == 10 and gone.run(name="e0") == 0 and gone.run(name="e1") == 10
    assert len(built) == 1


def test_an_upsert_with_a_condition_returns_only_what_it_changed(db: peewee.Database) -> None:
    upsert = Statement(lambda s: IncomingMessage
                       .insert(key=s.key, received_at=s.at, handled_at=s.at, outcome="request", folder="Processed")
                       .on_conflict(conflict_target=[IncomingMessage.key], update={IncomingMessage.handled_at: s.at},
                                    where=IncomingMessage.handled_at.is_null())
                       .returning(IncomingMessage.id, IncomingMessage.handled_at))
    [(row_id, handled_at)] = upsert.rows(key="mid:a@b", at=AT)
    assert handled_at == AT
    assert upsert.rows(key="mid:a@b", at=AT) == []                    # handled already: nothing changes
    assert IncomingMessage.get_by_id(row_id).key == "mid:a@b"
