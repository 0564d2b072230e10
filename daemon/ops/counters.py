"""The daemon's counters and heartbeat: moved where things happen (ingest, outbox, checks),
exposed by the metrics endpoint (daemon.ops.metrics), which reads the rest at scrape time.

Its own small module so that the App (daemon.app) can hold one without importing the
endpoint, which reads the App.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram

CHECK_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The daemon's own registry (never prometheus_client's global one) and the loop's heartbeat."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter("smartacct_messages_handled", "Incoming messages handled, by outcome "
                                "(failed: an attempt that raised; duplicate: seen before)",
                                ["outcome"], registry=self.registry)
        self.emails_sent = Counter("smartacct_emails_sent", "Emails handed to the SMTP server (or the outgoing "
                                   "Maildir), by kind", ["kind"], registry=self.registry)
        self.emails_deferred = Counter("smartacct_emails_deferred", "Temporary delivery failures, retried later, "
                                       "by kind", ["kind"], registry=self.registry)
        self.emails_failed = Counter("smartacct_emails_failed", "Emails given up on, by kind", ["kind"],
                                     registry=self.registry)
        self.check_duration = Histogram("smartacct_check_duration_seconds", "Duration of a scheduled check run",
                                        buckets=CHECK_BUCKETS, registry=self.registry)
        self.heartbeat = time.monotonic()

    def tick(self) -> None:
        """The loop is alive: called each pass, per message and per outgoing email."""
        self.heartbeat = time.monotonic()

    def handled(self, outcome: str) -> None:
        self.messages.labels(outcome=outcome).inc()
