"""The loop guard's verdict (DESIGN §3, §4): whether an answer may go to an address now. Pure.

Answers to incoming mail are the only emails a mail loop can multiply (an autoresponder
answering our answer), so they are the ones held back: at most `max_per_hour` emails to
one address per hour, and the same answer to one address at most once a day.
"""

from __future__ import annotations

from daemon.core.workflow import Mail

ANSWER_KINDS = frozenset({"rejection", "help", "status", "late_reply"})


def answer_suppressed(mail: Mail, sent_last_hour: int, same_topic_today: bool, max_per_hour: int) -> str | None:
    """Why `mail` must not go out now, or None; only answers are ever held back."""
    if mail.kind not in ANSWER_KINDS:
        return None
    if max_per_hour and sent_last_hour >= max_per_hour:
        return "rate_limit"
    if mail.topic and same_topic_today:
        return "same_answer_today"
    return None
