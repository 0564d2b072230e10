"""Prometheus metrics and /healthz for admins and their monitoring (DESIGN §5 [metrics], issue 7).

Counters move where things happen (ingest, outbox, checks); everything that is a
state of the world (queue depth, ages, requests by state, the mailbox's last answer)
is read at scrape time, so a stalled daemon cannot report stale good news.
The HTTP server runs in its own threads; each request opens its own database
connection (peewee connections are per thread) and never touches the mailbox's
connection: it only reads plain attributes the loop keeps up to date.

Health: /healthz answers 200 "ok" when the loop is alive, the database answers and
the mailbox answered recently; otherwise 503 with a one-line reason. "Alive" and
"recently" both mean within HEALTH_FACTOR × max(poll_interval, 60 s): the loop never
waits longer than poll_interval between passes, so twice that is a stall.
"""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import threading
import time
from typing import Any, Iterable, Iterator, Protocol, cast

import peewee
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from daemon import events, log
from daemon.clock import Clock
from daemon.config import Config, parse_listen
from daemon.errors import MetricsError
from daemon.mail.mailbox import Mailbox
from daemon.mail.transport import Transport
from daemon.ops.counters import Metrics
from models.attempt import Attempt
from models.base import execute_sql
from models.message import IncomingMessage, Outcome
from models.outbox import OutboxRow, OutboxState
from models.request import Request
from models.state import State

HEALTH_FACTOR = 2
HEALTH_FLOOR = dt.timedelta(seconds=60)


class Observed(Protocol):
    """What the endpoint reads of the running daemon (daemon.app.App), from its own threads.
    The backends it only looks at: it never opens them, and never uses the loop's connection."""

    @property
    def config(self) -> Config: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def db(self) -> peewee.Database: ...
    @property
    def stop(self) -> threading.Event: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def mailbox_if_open(self) -> Mailbox | None: ...
    @property
    def transport_if_open(self) -> Transport | None: ...


def health_limit(app: Observed) -> float:
    """Seconds without a heartbeat (or an answer from the mailbox) after which /healthz says 503."""
    return HEALTH_FACTOR * max(app.config.mailbox.poll_interval, HEALTH_FLOOR).total_seconds()


def health(app: Observed) -> str | None:
    """None when healthy, else a one-line reason. Runs in an HTTP thread with its own DB connection."""
    if app.stop.is_set():
        return "stopping"
    limit = health_limit(app)
    now = time.monotonic()
    quiet = now - app.metrics.heartbeat
    if quiet > limit:
        return f"loop stalled: no heartbeat for {quiet:.0f}s (limit {limit:.0f}s)"
    try:
        execute_sql(app.db, "SELECT version FROM schema_version LIMIT 1").fetchall()
    except peewee.PeeweeException as exc:
        return f"database unreachable: {_one_line(exc)}"
    mailbox = app.mailbox_if_open
    if mailbox is None:
        return "mailbox not contacted yet"
    reason = mailbox.unavailable() if hasattr(mailbox, "unavailable") else None
    if reason:
        return f"mailbox unreachable: {_one_line(reason)}"
    last = getattr(mailbox, "last_contact", None)
    if last is None:
        return "mailbox not contacted yet"
    if now - last > limit:
        return f"mailbox silent for {now - last:.0f}s (limit {limit:.0f}s)"
    return None


class StateCollector:
    """Gauges computed at scrape time from the database and the backends' own attributes."""

    def __init__(self, app: Observed) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        return []   # nothing to check at registration: collect() needs the database

    def collect(self) -> Iterator[Metric]:
        app = self.app
        mono = time.monotonic()
        yield _gauge("smartacct_loop_heartbeat_age_seconds", "Seconds since the main loop last showed life",
                     mono - app.metrics.heartbeat)
        yield from self._mailbox(mono)
        yield from self._oauth2(mono)
        try:
            families = list(self._database(app.clock.now()))
        except peewee.PeeweeException as exc:
            log.event(events.METRICS_DATABASE_UNAVAILABLE, error=_one_line(exc))
            families = []
            up = 0.0
        else:
            up = 1.0
        yield _gauge("smartacct_database_up", "1 when the database answered this scrape", up)
        yield from families

    def _mailbox(self, mono: float) -> Iterator[Metric]:
        mailbox = self.app.mailbox_if_open
        if mailbox is None:
            yield _gauge("smartacct_mailbox_up", "1 when the mailbox is connected and answering", 0.0)
            return
        last = getattr(mailbox, "last_contact", None)
        reason = mailbox.unavailable() if hasattr(mailbox, "unavailable") else None
        yield _gauge("smartacct_mailbox_up", "1 when the mailbox is connected and answering",
                     1.0 if last is not None and not reason else 0.0)
        if last is not None:
            yield _gauge("smartacct_mailbox_last_contact_age_seconds",
                         "Seconds since the mailbox last answered (IDLE, poll or listing)", mono - last)
        if hasattr(mailbox, "reconnects"):
            yield CounterMetricFamily("smartacct_imap_reconnects", "IMAP connections re-established after a loss",
                                      value=float(mailbox.reconnects))

    def _oauth2(self, mono: float) -> Iterator[Metric]:
        family = GaugeMetricFamily("smartacct_oauth2_token_last_failure_timestamp_seconds",
                                   "Unix time the oauth2_token_command last failed (0: never)",
                                   labels=["backend"])
        cfg = self.app.config
        for backend, configured, obj in (("mailbox", cfg.mailbox.oauth2_token_command, self.app.mailbox_if_open),
                                         ("smtp", cfg.smtp.oauth2_token_command, self.app.transport_if_open)):
            if not configured:
                continue
            failed = getattr(obj, "oauth2_failed_at", None)
            family.add_metric([backend], 0.0 if failed is None else time.time() - (mono - failed))
        if family.samples:
            yield family

    def _database(self, now: dt.datetime) -> Iterator[Metric]:
        by_state = {s.value: 0 for s in State}
        counts = Request.select(Request.state, peewee.fn.COUNT(Request.id)).group_by(Request.state).tuples()
        for state, count in cast(Iterable[tuple[str, int]], counts):   # the stubs type rows as models
            by_state[state] = count
        family = GaugeMetricFamily("smartacct_requests", "Requests by state", labels=["state"])
        for state, count in by_state.items():
            family.add_metric([state], float(count))
        yield family

        queued = OutboxRow.state == OutboxState.queued.value
        yield _gauge("smartacct_outbox_queued", "Emails waiting in the outbox (queue depth)",
                     OutboxRow.select().where(queued).count())
        oldest = OutboxRow.select(OutboxRow.created_at).where(queued).order_by(OutboxRow.created_at).first()
        yield _gauge("smartacct_outbox_oldest_queued_age_seconds", "Age of the oldest queued email (0: none)",
                     _age(now, oldest.created_at if oldest else None))
        yield _gauge("smartacct_outbox_failed", "Failed emails waiting for an admin (smartacct outbox retry)",
                     OutboxRow.select().where(OutboxRow.state == OutboxState.failed.value).count())

        yield _gauge("smartacct_messages_unprocessed", "Incoming messages in hand or failed, not handled yet",
                     Attempt.select().count())
        oldest_in = Attempt.select(Attempt.first_seen).order_by(Attempt.first_seen).first()
        yield _gauge("smartacct_oldest_unprocessed_message_age_seconds",
                     "Age of the oldest incoming message not handled yet (0: none)",
                     _age(now, oldest_in.first_seen if oldest_in else None))
        quarantined = IncomingMessage.outcome == Outcome.quarantined.value
        yield _gauge("smartacct_messages_quarantined", "Messages in quarantine (smartacct quarantine list)",
                     IncomingMessage.select().where(quarantined).count())
        oldest_q = (IncomingMessage.select(IncomingMessage.handled_at).where(quarantined)
                    .order_by(IncomingMessage.handled_at).first())
        yield _gauge("smartacct_oldest_quarantined_message_age_seconds",
                     "Age of the oldest quarantined message (0: none)",
                     _age(now, oldest_q.handled_at if oldest_q else None))
        yield from _stats(self.app.db, now)


def _stats(db: peewee.Database, now: dt.datetime) -> Iterator[Metric]:
    """The figures of `smartacct stats` (over all time) that fit a gauge: the counts of requests,
    emails and quarantined messages are above already. A ratio or a time without any request
    behind it yet is left out, not shown as 0."""
    from daemon.ops.stats import compute

    figures = compute(db, now)
    if figures.acceptance_rate is not None:
        yield _gauge("smartacct_acceptance_ratio", "Accepted / (accepted + declined + expired), over all time",
                     figures.acceptance_rate)
    for name, what, timing in (
            ("smartacct_time_to_confirm_seconds", "From the review email to the partner's confirmation",
             figures.time_to_confirm),
            ("smartacct_time_to_accept_seconds", "From the activation email to the customer's acceptance",
             figures.time_to_accept)):
        if timing.count:
            family = GaugeMetricFamily(name, f"{what}: median (0.5) and 90th percentile (0.9), over all time",
                                       labels=["quantile"])
            family.add_metric(["0.5"], float(timing.median_seconds or 0))
            family.add_metric(["0.9"], float(timing.p90_seconds or 0))
            yield family
    yield _gauge("smartacct_requests_expiring_next_7_days", "Requests pending acceptance that expire within 7 days",
                 figures.expiring_next_7_days)
    yield _gauge("smartacct_requests_lapsing_next_7_days", "Requests awaiting confirmation that lapse within 7 days",
                 figures.lapsing_next_7_days)


# --- the HTTP endpoint ---------------------------------------------------------------------------

class MetricsServer:
    """A small threaded HTTP server: GET /metrics and GET /healthz."""

    def __init__(self, app: Observed, host: str, port: int) -> None:
        app.metrics.registry.register(StateCollector(app))
        handler = _handler(app)
        server_class = _Server6 if ":" in host else _Server
        try:
            self.server = server_class((host, port), handler)
        except OSError as exc:
            raise MetricsError(f"metrics.listen: cannot listen on {host}:{port}: {exc.strerror}") from None
        self.address = f"{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.event(events.METRICS_LISTENING, address=self.address)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(app: Observed) -> MetricsServer | None:
    """Start the endpoint when [metrics] listen is set; None when it is off."""
    if not app.config.metrics.listen:
        return None
    server = MetricsServer(app, *parse_listen(app.config.metrics.listen))
    server.start()
    return server


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _handler(app: Observed) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "smartacct"

        def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
            path = self.path.split("?", 1)[0]
            try:
                with app.db.connection_context():   # this thread's own connection, closed after
                    if path == "/metrics":
                        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                        self._reply(200, encoder(app.metrics.registry), content_type)
                    elif path == "/healthz":
                        reason = health(app)
                        self._reply(200 if reason is None else 503, f"{reason or 'ok'}\n".encode())
                    else:
                        self._reply(404, b"not found: try /metrics or /healthz\n")
            except peewee.PeeweeException as exc:   # connecting failed
                reason = f"database unreachable: {_one_line(exc)}"
                self._reply(503, f"{reason}\n".encode())

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass   # scrapes every few seconds would drown the admin's log

    return Handler


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _age(now: dt.datetime, since: dt.datetime | None) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


def _one_line(value: object) -> str:
    text = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else str(value)
    return " ".join(text.split())[:300]
