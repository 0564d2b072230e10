"""The hourly cap per address and the loop guard (DESIGN §3, §4). Pure.

No sender can make us send more than `max_per_hour` emails to one address in any hour.
Answers to incoming mail are what a mail loop multiplies (an autoresponder answering our
answer), so over the cap they are dropped when queued, and the same answer goes to one
address at most once a day. Every other email (a review, an activation) is delayed by
the outbox until the hour allows it, never lost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from daemon.core.workflow import Mail

HOUR = dt.timedelta(hours=1)

ANSWER_KINDS = frozenset({"rejection", "help", "status", "late_reply", "answer"})


def answer_suppressed(mail: Mail, sent_last_hour: int, same_topic_today: bool, max_per_hour: int) -> str | None:
    """Why `mail` must not go out now, or None; only answers are ever held back."""
    if mail.kind not in ANSWER_KINDS:
        return None
    if max_per_hour and sent_last_hour >= max_per_hour:
        return "rate_limit"
    if mail.topic and same_topic_today:
        return "same_answer_today"
    return None


def send_at(sent: Sequence[dt.datetime], now: dt.datetime, max_per_hour: int) -> dt.datetime | None:
    """When the next email to one address may go out, given when the earlier ones went: None for
    now, else one hour after the oldest of the `max_per_hour` that fill the last hour."""
    recent = sorted(t for t in sent if t > now - HOUR)
    if not max_per_hour or len(recent) < max_per_hour:
        return None
    return recent[len(recent) - max_per_hour] + HOUR
