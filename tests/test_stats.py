"""`smartacct stats` and its Prometheus gauges (issue 15) on a data set the workflow itself made:
requests submitted, confirmed, accepted, declined, left to lapse and expire, all through the
inbox, on an injected clock, so every figure is known exactly beforehand."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee
import pytest

from daemon.clock import FixedClock
from e2e import Install, Sent, good_fields, reply, request_email

T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.timezone.utc)
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
NOW = T0 + 100 * DAY
PARTNER = "paula@partner.example"


@dataclass
class Timed(Install):
    """An installation whose every command runs on a clock the test sets."""

    fixed: FixedClock = field(default_factory=lambda: FixedClock(T0))

    @property
    def clock(self) -> FixedClock:
        return self.fixed

    def at(self, when: dt.datetime) -> Timed:
        self.fixed.set(when)
        return self

    def submit(self, when: dt.datetime, domain: str, **fields: str) -> Sent:
        self.at(when).drop(request_email(good_fields(domain, **fields)))
        self.run_once()
        [answer] = [e for e in self.new_sent() if e.to == PARTNER]   # reminders due meanwhile go to customers
        return answer

    def answer(self, when: dt.datetime, email: Sent, keyword: str) -> list[Sent]:
        self.at(when).drop(reply(email, keyword))
        self.run_once()
        return self.new_sent()

    def check(self, when: dt.datetime) -> None:
        self.at(when).cli("check")
        self.new_sent()

    def stats(self, *args: str) -> dict[str, Any]:
        return json.loads(self.at(NOW).cli("stats", "--json", *args).stdout)  # type: ignore[no-any-return]


def activation(emails: list[Sent], domain: str) -> Sent:
    return next(e for e in emails if e.to == f"carla@{domain}")


@pytest.fixture
def history(tmp_path: Path, database_url: str | None) -> Timed:
    """Nine requests over 100 days. Time to confirm: 1h, 2h, 4h, 6h, 8h, 12h; to accept: 1h, 1d, 3d."""
    s = Timed(tmp_path, database_url=database_url)
    reviews = {d: s.submit(T0, f"{d}.example") for d in "abcde"}
    s.submit(T0, "f.example", customer_email="not an address")                          # rejected
    invited = {d: activation(s.answer(T0 + hours * HOUR, reviews[d], "CONFIRM"), f"{d}.example")
               for d, hours in (("a", 2), ("b", 4), ("c", 6), ("d", 8))}
    s.answer(T0 + 2 * HOUR + DAY, invited["a"], "ACCEPT")                               # a: active after 1d
    s.answer(T0 + 6 * HOUR + DAY, invited["c"], "DECLINE")                              # c: declined
    s.answer(T0 + 4 * HOUR + 3 * DAY, invited["b"], "ACCEPT")                           # b: active after 3d
    s.check(T0 + 15 * DAY)                                                              # e: lapsed
    review_i = s.submit(T0 + 16 * DAY, "i.example")
    s.answer(T0 + 16 * DAY + 12 * HOUR, review_i, "CONFIRM")                            # i: expires T0+106d 12h
    s.check(T0 + 90 * DAY + 9 * HOUR)                                                   # d: expired
    s.submit(T0 + 92 * DAY, "h.example")                                                # h: lapses T0+106d
    review_g = s.submit(NOW - 3 * HOUR, "g.example")
    invite_g = activation(s.answer(NOW - 2 * HOUR, review_g, "CONFIRM"), "g.example")
    s.answer(NOW - HOUR, invite_g, "ACCEPT")                                            # g: 1h and 1h
    return s


@pytest.mark.both_databases
def test_stats_over_all_time_and_since(history: Timed) -> None:
    states = {r["account_domain"][0]: r["state"] for r in history.requests()}
    assert states == {"a": "active", "b": "active", "c": "declined", "d": "expired", "e": "lapsed", "f": "rejected",
                      "g": "active", "h": "awaiting_confirmation", "i": "pending_acceptance"}
    emails = json.loads(history.cli("outbox", "list", "--json").stdout)

    s = history.stats()
    assert s["since"] is None and s["now"] == "2026-04-15T10:00:00Z"
    assert s["requests"] == {"awaiting_confirmation": 1, "pending_acceptance": 1, "active": 3, "rejected": 1,
                             "expired": 1, "declined": 1, "cancelled": 0, "lapsed": 1}
    assert s["requests_total"] == 9
    assert (s["accepted"], s["declined"], s["expired"], s["acceptance_rate"]) == (3, 1, 1, 0.6)
    # 1h 2h 4h 6h 8h 12h: the median between 4h and 6h, the 90th percentile half way from 8h to 12h.
    assert s["time_to_confirm"] == {"count": 6, "median_seconds": 5 * 3600.0, "p90_seconds": 10 * 3600.0}
    # 1h 1d 3d: the median 1d; the 90th percentile 80% of the way from 1d to 3d.
    assert s["time_to_accept"] == {"count": 3, "median_seconds": 86400.0, "p90_seconds": 86400.0 + 0.8 * 2 * 86400}
    assert (s["expiring_next_7_days"], s["lapsing_next_7_days"]) == (1, 1)
    refs = {r["account_domain"]: r["ref"] for r in history.requests()}
    assert [(u["ref"], u["event"], u["at"]) for u in s["soonest"]] == [
        (refs["h.example"], "lapses", "2026-04-21T10:00:00Z"), (refs["i.example"], "expires", "2026-04-21T22:00:00Z")]
    assert s["emails"] == {"queued": 0, "sent": len(emails), "failed": 0}
    assert s["quarantined"] == 0

    month = history.stats("--since", "30d")          # from T0 + 70d: h and g came in; d expired, g accepted
    assert month["since"] == "2026-03-16T10:00:00Z"
    assert {k: v for k, v in month["requests"].items() if v} == {"awaiting_confirmation": 1, "active": 1}
    assert (month["accepted"], month["declined"], month["expired"], month["acceptance_rate"]) == (1, 0, 1, 0.5)
    assert month["time_to_confirm"] == month["time_to_accept"] == \
        {"count": 1, "median_seconds": 3600.0, "p90_seconds": 3600.0}
    assert (month["expiring_next_7_days"], month["lapsing_next_7_days"]) == (1, 1)   # always from now
    recent = [e for e in emails if e["created_at"] >= "2026-03-16T10:00:00Z"]
    assert month["emails"]["sent"] == len(recent) > 0

    hours = history.stats("--since", "4h")               # g alone
    assert hours["requests_total"] == 1 and hours["accepted"] == 1


def test_the_text_of_stats_says_each_figure_in_words(history: Timed) -> None:
    text = history.at(NOW).cli("stats").stdout
    lines = text.splitlines()
    assert lines[0] == "over all time"
    assert "requests                9" in lines
    assert "  awaiting_confirmation 1" in lines and "  active                3" in lines
    assert "acceptance rate         60.0% (3 accepted of 5 decided or expired: 1 declined, 1 expired)" in lines
    assert any(line.startswith("time to confirm         median 5h, 90th percentile 10h (") for line in lines)
    assert any(line.startswith("time to accept          median 1d, 90th percentile 2d 14h (") for line in lines)
    assert "next 7 days             1 expire, 1 lapse" in lines
    assert any("lapses" in line and "h.example" in line for line in lines)
    assert any(line.startswith("emails                  0 queued, ") and line.endswith(", 0 failed") for line in lines)
    assert lines[-1] == "quarantined messages    0" and text.endswith("\n")
    month = history.at(NOW).cli("stats", "--since", "30d").stdout
    assert month.splitlines()[0] == "since 2026-03-16T10:00:00Z (the last 30d)"


def test_the_same_figures_are_prometheus_gauges(history: Timed) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from daemon import config as config_mod
    from daemon.app import build
    from daemon.ops.metrics import StateCollector
    from models.base import database_proxy

    saved = database_proxy.obj
    app = build(config_mod.load(history.config), clock=FixedClock(NOW))
    try:
        registry = CollectorRegistry()
        registry.register(StateCollector(app))
        text = generate_latest(registry).decode()
    finally:
        app.close()
        database_proxy.initialize(saved)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("smartacct_acceptance_ratio", ())] == 0.6
    assert samples[("smartacct_time_to_confirm_seconds", (("quantile", "0.5"),))] == 18000
    assert samples[("smartacct_time_to_confirm_seconds", (("quantile", "0.9"),))] == 36000
    assert samples[("smartacct_time_to_accept_seconds", (("quantile", "0.5"),))] == 86400
    assert samples[("smartacct_time_to_accept_seconds", (("quantile", "0.9"),))] == 224640
    assert samples[("smartacct_requests_expiring_next_7_days", ())] == 1
    assert samples[("smartacct_requests_lapsing_next_7_days", ())] == 1
    # The gauges that were there before stay.
    assert samples[("smartacct_requests", (("state", "active"),))] == 3
    assert samples[("smartacct_outbox_failed", ())] == 0 and samples[("smartacct_messages_quarantined", ())] == 0


def test_stats_on_an_empty_installation_says_so_without_inventing_numbers(tmp_path: Path) -> None:
    install = Install(tmp_path)
    install.run_once()
    s = json.loads(install.cli("stats", "--json").stdout)
    assert s["requests_total"] == 0 and s["acceptance_rate"] is None
    assert s["time_to_confirm"] == {"count": 0, "median_seconds": None, "p90_seconds": None}
    text = install.cli("stats").stdout
    assert "acceptance rate         - (0 accepted of 0 decided or expired" in text
    assert "median -, 90th percentile -" in text


@pytest.mark.both_databases
def test_stats_costs_the_same_few_queries_for_ten_or_ten_thousand_requests(install: Install) -> None:
    """Counted by the database: the number of statements does not grow with the requests."""
    install.run_once()
    counts: list[int] = []
    for total in (10, 10_000):
        _add_requests(install, total - (counts and 10 or 0))
        started = time.monotonic()
        with Statements() as seen:
            s = json.loads(install.cli("stats", "--json").stdout)
        counts.append(len(seen))
        assert s["requests_total"] == total and s["time_to_accept"]["count"] == total // 2
        print(f"stats over {total} requests: {len(seen)} statements, {time.monotonic() - started:.2f}s")
    assert counts[0] == counts[1] < 30


def _add_requests(install: Install, n: int) -> None:
    """n requests as the workflow leaves them, half pending and half active, written directly."""
    from daemon import config as config_mod
    from models.base import database_proxy
    from models.db import open_database
    from models.request import Request

    saved = database_proxy.obj
    db = open_database(config_mod.load(install.config).database.url)
    try:
        start = Request.select().count()
        rows = []
        for i in range(start, start + n):
            created = T0 + i * dt.timedelta(minutes=1)
            confirmed = created + (i % 48 + 1) * HOUR
            accepted = confirmed + (i % 30 + 1) * DAY if i % 2 else None
            rows.append({"state": "active" if accepted else "pending_acceptance", "language": "en",
                         "partner_email": PARTNER, "account_name": f"Company {i}", "customer_email": f"c@d{i}.example",
                         "account_domain": f"d{i}.example", "created_at": created, "updated_at": created,
                         "confirmed_at": confirmed, "expires_at": confirmed + 90 * DAY, "accepted_at": accepted})
        with db.atomic():
            for batch in peewee.chunked(rows, 500):
                Request.insert_many(batch).execute()
    finally:
        db.close()
        database_proxy.initialize(saved)


class Statements:
    """The SQL statements peewee sends meanwhile (its DEBUG log, one record per statement)."""

    def __enter__(self) -> list[str]:
        self.seen: list[str] = []
        self.logger = logging.getLogger("peewee")
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.seen.append(record.getMessage())  # type: ignore[method-assign]
        self.saved = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self.handler)
        return self.seen

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.saved)
