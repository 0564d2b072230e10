"""Every event the log can show, in one table (DESIGN §7): its name, its level, what it tells an admin.

Code logs only these constants (`log.event(events.REQUEST_CONFIRMED, ref=...)`), never a name
spelled out or built at run time, so this table is the whole vocabulary of the log; the README's
table is made from it (`markdown_table`) and tests/test_events.py holds the code to both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass(frozen=True)
class LogEvent:
    """One kind of log line: a dotted noun.past_tense name, the level it is logged at, and one
    line of meaning for the admin who reads it."""

    name: str
    level: int
    meaning: str

    @property
    def level_name(self) -> str:
        return logging.getLevelName(self.level)

    def __str__(self) -> str:
        return self.name


DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR

# --- the daemon itself -----------------------------------------------------------------------------
DAEMON_STARTED = LogEvent("daemon.started", INFO,
                          "the daemon started: its version, config file, mailbox, outbox and database")
DAEMON_STOPPING = LogEvent("daemon.stopping", INFO, "SIGTERM or SIGINT: it finishes the message in hand, then stops")
DAEMON_STOPPED = LogEvent("daemon.stopped", INFO, "the daemon stopped")
LOG_REOPENED = LogEvent("log.reopened", INFO, "SIGHUP: the log file was reopened (after logrotate)")
METRICS_LISTENING = LogEvent("metrics.listening", INFO, "/metrics and /healthz are served at `address`")
METRICS_DATABASE_UNAVAILABLE = LogEvent("metrics.database_unavailable", WARNING,
                                        "/metrics could not read the database; the gauges from it are left out")
MAILBOX_UNAVAILABLE = LogEvent("mailbox.unavailable", WARNING,
                               "the mailbox could not be read; the daemon waits and tries again")
DATABASE_UNAVAILABLE = LogEvent("database.unavailable", ERROR,
                                "the database is away; the daemon retries in `retry_in`, nothing is lost")
DATABASE_CLOSED = LogEvent("database.closed", INFO,
                           "closing a broken database connection failed; a fresh one is opened")

# --- requests --------------------------------------------------------------------------------------
REQUEST_CREATED = LogEvent("request.created", INFO, "a valid form arrived: a new request awaits the partner's CONFIRM")
REQUEST_REJECTED = LogEvent("request.rejected", INFO, "a form with problems arrived: the partner was told what to fix")
REQUEST_CONFIRMED = LogEvent("request.confirmed", INFO, "the partner confirmed: the customer is invited")
REQUEST_CANCELLED = LogEvent("request.cancelled", INFO, "the partner or an admin cancelled the request")
REQUEST_ACCEPTED = LogEvent("request.accepted", INFO, "the customer accepted: the account is active")
REQUEST_DECLINED = LogEvent("request.declined", INFO, "the customer declined")
REQUEST_EXPIRED = LogEvent("request.expired", INFO, "the customer did not answer within acceptance_window")
REQUEST_LAPSED = LogEvent("request.lapsed", INFO, "the partner did not confirm within review_window")
REMINDER_SENT = LogEvent("reminder.sent", INFO, "a reminder to the customer was queued")
CHECK_FAILED = LogEvent("check.failed", ERROR,
                        "a scheduled check failed for one request; retried at `retry_at`, the others go on")
CHECKS_DONE = LogEvent("checks.done", INFO, "a pass of the scheduled checks acted on `acted` requests")

# --- incoming mail ---------------------------------------------------------------------------------
MESSAGE_HANDLED = LogEvent("message.handled", INFO, "a message was handled: its `outcome` and `folder`")
MESSAGE_FILED = LogEvent("message.filed", INFO, "a handled message was moved to its folder")
MESSAGE_DUPLICATE = LogEvent("message.duplicate", INFO,
                             "a message handled before came again (same Message-ID): filed, nothing done twice")
MESSAGE_IGNORED = LogEvent("message.ignored", INFO,
                           "an automatic message, one from ourselves or from an outsider: not answered (`reason`)")
MESSAGE_REFUSED = LogEvent("message.refused", WARNING,
                           "a message whose writer cannot be told from a forger (`reason`): never acted on")
MESSAGE_NOT_A_REQUEST = LogEvent("message.not_a_request", INFO,
                                 "a partner's message with neither a form nor a command: answered with the blank form")
MESSAGE_TOO_LARGE = LogEvent("message.too_large", WARNING,
                             "a message over max_message_size: only its header was read")
MESSAGE_SKIPPED = LogEvent("message.skipped", INFO, "another instance holds the message; left to it")
MESSAGE_ISOLATED = LogEvent("message.isolated", INFO,
                            "a message that failed or stalled before is handled in a child process with limits")
MESSAGE_FAILED = LogEvent("message.failed", WARNING, "handling a message failed; it is tried again")
MESSAGE_QUARANTINED = LogEvent("message.quarantined", ERROR,
                               "a message failed max_attempts times: filed in Quarantine (`quarantine list`)")
MESSAGE_REQUEUED = LogEvent("message.requeued", INFO, "an admin put a quarantined message back in the inbox")

# --- replies, commands, bounces --------------------------------------------------------------------
REPLY_REFUSED = LogEvent("reply.refused", WARNING,
                         "a reply that may not act (`reason`: no_token, wrong_sender, stale, ref_mismatch)")
REPLY_ANSWERED = LogEvent("reply.answered", INFO,
                          "a party's reply decided nothing: it got one short answer with the words it may use")
STATUS_ANSWERED = LogEvent("status.answered", INFO, "a party asked STATUS and was sent the request's status")
STATUS_REFUSED = LogEvent("status.refused", WARNING, "a STATUS for an unknown request or from a non-party: no answer")
HELP_ANSWERED = LogEvent("help.answered", INFO, "HELP was answered with the instructions and the blank form")
BOUNCE_RECEIVED = LogEvent("bounce.received", WARNING, "a bounce of one of our emails")
BOUNCE_IGNORED = LogEvent("bounce.ignored", INFO, "a bounce of no email of ours")
PARTNER_TOLD = LogEvent("partner.told", INFO, "the partner was told that an email to the customer failed")

# --- outgoing mail ---------------------------------------------------------------------------------
EMAIL_SENT = LogEvent("email.sent", INFO, "an email was handed to the SMTP server (or the outbox folder)")
EMAIL_DEFERRED = LogEvent("email.deferred", WARNING, "a temporary SMTP failure: tried again at `retry_at`")
EMAIL_FAILED = LogEvent("email.failed", ERROR, "an email could not be sent, for good (`outbox list --state failed`)")
EMAIL_DELAYED = LogEvent("email.delayed", WARNING,
                         "emails to one address held back until `until` by max_emails_per_address_per_hour")
EMAIL_SUPPRESSED = LogEvent("email.suppressed", WARNING,
                            "the loop guard held an answer back (`reason`: rate_limit, same_answer_today)")
EMAIL_REQUEUED = LogEvent("email.requeued", INFO, "an admin queued a failed email again")
OUTBOX_PAUSED = LogEvent("outbox.paused", WARNING, "no SMTP session (or outbox folder) to be had: every email waits")
OUTBOX_RESUMED = LogEvent("outbox.resumed", INFO, "sending works again after outbox.paused")
SMTP_CONNECTED = LogEvent("smtp.connected", DEBUG, "an SMTP session was opened")

# --- the IMAP connection ---------------------------------------------------------------------------
IMAP_CONNECTED = LogEvent("imap.connected", INFO, "the IMAP connection is up")
IMAP_RECONNECTING = LogEvent("imap.reconnecting", WARNING, "the IMAP connection broke; reconnecting with backoff")
IMAP_RECONNECTED = LogEvent("imap.reconnected", INFO, "the IMAP connection is back after `attempts` tries")
IMAP_FOLDER_CREATED = LogEvent("imap.folder_created", INFO, "a folder the daemon files into was created")
IMAP_FOLDER_EXISTS = LogEvent("imap.folder_exists", INFO, "a folder the daemon files into was there already")
IMAP_UIDVALIDITY_CHANGED = LogEvent("imap.uidvalidity_changed", WARNING,
                                    "the server renumbered the folder: every message in it is looked at again")
IMAP_FILE_SKIPPED = LogEvent("imap.file_skipped", WARNING,
                             "a handled message was not moved: the folder was renumbered meanwhile; it comes again, as a duplicate")

EVENTS: tuple[LogEvent, ...] = tuple(value for value in list(globals().values()) if isinstance(value, LogEvent))
BY_NAME: dict[str, LogEvent] = {e.name: e for e in EVENTS}


def markdown_table() -> str:
    """The README's table of events (section "The log"), one row per event in the order above."""
    rows = ["| event | level | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{e.name}` | {e.level_name} | {e.meaning} |" for e in EVENTS]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":   # `python -m daemon.events`: the table for the README's section "The log"
    print(markdown_table(), end="")
