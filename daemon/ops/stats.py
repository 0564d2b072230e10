"""The figures behind `smartacct stats` and the matching Prometheus gauges (DESIGN §6, issue 15).

Everything is counted by the database (GROUP BY, COUNT, and ORDER BY … LIMIT 2 OFFSET k for a
percentile), so the cost is a handful of queries whatever the number of requests; no request is
loaded into Python. The same SQL runs on SQLite and PostgreSQL; only the difference of two
timestamps in seconds is spelled per dialect.

`since` narrows every figure to what happened in the window: requests created, confirmations and
acceptances made, decisions taken (accepted, declined, expired), emails sent or failed (by when
they were written), messages quarantined. What comes next (the next 7 days) and the emails queued
now are always now.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, cast

import peewee

from daemon.clock import iso
from models.message import IncomingMessage, Outcome
from models.outbox import OutboxRow, OutboxState
from models.request import Request
from models.state import State

AHEAD = dt.timedelta(days=7)     # "what expires or lapses in the next 7 days"
SOONEST = 10                     # of those, the requests named one by one
QUANTILES = (0.5, 0.9)
DECIDED = (State.active, State.declined, State.expired)   # the customer's outcome is known


@dataclass(frozen=True)
class Timing:
    """How long a step took, over the requests that took it: median and 90th percentile, in seconds."""

    count: int
    median_seconds: float | None
    p90_seconds: float | None


@dataclass(frozen=True)
class Upcoming:
    """One request that expires (pending acceptance) or lapses (awaiting confirmation) soon."""

    ref: str
    state: str
    event: str            # "expires" or "lapses"
    at: str | None
    account_name: str
    account_domain: str


@dataclass(frozen=True)
class Stats:
    now: str | None
    since: str | None                                  # None: over all time
    requests: dict[str, int]                           # per state, every state named
    requests_total: int
    accepted: int
    declined: int
    expired: int
    acceptance_rate: float | None                      # accepted / (accepted + declined + expired)
    time_to_confirm: Timing                            # review email (request created) -> partner's CONFIRM
    time_to_accept: Timing                             # activation email (confirmed) -> customer's ACCEPT
    expiring_next_7_days: int
    lapsing_next_7_days: int
    soonest: list[Upcoming] = field(default_factory=list)
    emails: dict[str, int] = field(default_factory=dict)   # queued, sent, failed
    quarantined: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def compute(db: peewee.Database, now: dt.datetime, since: dt.datetime | None = None) -> Stats:
    """Every figure of `smartacct stats`, over all time or since `since`."""
    created = Request.created_at >= since if since else None
    by_state = {s.value: 0 for s in State}
    by_state.update(_grouped(Request.select(Request.state, peewee.fn.COUNT(Request.id)), Request.state, created))

    decided_at = peewee.fn.COALESCE(Request.accepted_at, Request.closed_at)
    decisions = _grouped(Request.select(Request.state, peewee.fn.COUNT(Request.id))
                         .where(Request.state.in_([s.value for s in DECIDED])), Request.state,
                         decided_at >= since if since else None)
    accepted, declined, expired = (decisions.get(s.value, 0) for s in DECIDED)
    outcomes = accepted + declined + expired

    confirmed = Request.confirmed_at.is_null(False)
    accepted_ = Request.accepted_at.is_null(False)
    to_confirm = _timing(db, Request.created_at, Request.confirmed_at,
                         confirmed & (Request.confirmed_at >= since) if since else confirmed)
    to_accept = _timing(db, Request.confirmed_at, Request.accepted_at,
                        accepted_ & (Request.accepted_at >= since) if since else accepted_)

    horizon = now + AHEAD
    expiring = (Request.state == State.pending_acceptance.value) & (Request.expires_at < horizon)
    lapsing = (Request.state == State.awaiting_confirmation.value) & (Request.review_expires_at < horizon)
    soonest = _soonest(expiring, Request.expires_at, "expires") + _soonest(lapsing, Request.review_expires_at, "lapses")
    soonest.sort(key=lambda u: (u.at or "", u.ref))

    emails = {s.value: 0 for s in OutboxState}
    queued_now = OutboxRow.state == OutboxState.queued.value      # what waits is counted whenever it was written
    emails.update(_grouped(OutboxRow.select(OutboxRow.state, peewee.fn.COUNT(OutboxRow.id)), OutboxRow.state,
                           queued_now | (OutboxRow.created_at >= since) if since else None))
    quarantined = IncomingMessage.outcome == Outcome.quarantined.value
    if since:
        quarantined &= IncomingMessage.handled_at >= since

    return Stats(
        now=iso(now), since=iso(since), requests=by_state, requests_total=sum(by_state.values()),
        accepted=accepted, declined=declined, expired=expired,
        acceptance_rate=round(accepted / outcomes, 4) if outcomes else None,
        time_to_confirm=to_confirm, time_to_accept=to_accept,
        expiring_next_7_days=Request.select().where(expiring).count(),
        lapsing_next_7_days=Request.select().where(lapsing).count(),
        soonest=soonest[:SOONEST], emails=emails,
        quarantined=IncomingMessage.select().where(quarantined).count(),
    )


def _grouped(query: peewee.Select, key: peewee.Field, where: Any) -> dict[str, int]:
    if where is not None:
        query = query.where(where)
    rows = cast(Iterable[tuple[str, int]], query.group_by(key).tuples())   # the stubs type rows as models
    return {k: int(n) for k, n in rows}


def _seconds(db: peewee.Database, start: peewee.Field, end: peewee.Field) -> peewee.Node:
    """end - start in seconds, as the database computes it."""
    if isinstance(db, peewee.PostgresqlDatabase):
        return peewee.NodeList((peewee.SQL("EXTRACT(EPOCH FROM"), end - start, peewee.SQL(")")))
    return (peewee.fn.julianday(end) - peewee.fn.julianday(start)) * 86400.0


def _timing(db: peewee.Database, start: peewee.Field, end: peewee.Field, where: Any) -> Timing:
    """Median and 90th percentile, interpolated between the two nearest values (PostgreSQL's
    percentile_cont): a COUNT, then two rows of the sorted durations per quantile."""
    count = Request.select().where(where).count()
    if count == 0:
        return Timing(0, None, None)
    seconds = _seconds(db, start, end)
    values = []
    for q in QUANTILES:
        position = q * (count - 1)
        low = math.floor(position)
        rows = cast(Iterable[tuple[Any]], Request.select(seconds).where(where).order_by(seconds)
                    .limit(2).offset(low).tuples())
        pair = [float(r[0]) for r in rows]
        value = pair[0] + (pair[-1] - pair[0]) * (position - low)
        values.append(round(value, 3))
    return Timing(count, values[0], values[1])


def _soonest(where: Any, at: peewee.Field, event: str) -> list[Upcoming]:
    rows = Request.select(Request.id, Request.state, at, Request.account_name, Request.account_domain) \
        .where(where).order_by(at, Request.id).limit(SOONEST)
    return [Upcoming(r.ref, r.state, event, iso(getattr(r, at.name)), r.account_name, r.account_domain)
            for r in rows]


def duration(seconds: float | None) -> str:
    """A duration as an admin reads it: 45s, 12m, 3h 05m, 2d 4h, 30d."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    minutes = s // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"
