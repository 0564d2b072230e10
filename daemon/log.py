"""Structured log events for admins who tail the log (DESIGN §7).

`event(events.REQUEST_CONFIRMED, ref="SA-000042", partner="p@x")` writes
`2026-11-24T10:00:00Z INFO request.confirmed ref=SA-000042 partner=p@x`,
or the same as one JSON object per line, numbers and booleans as JSON numbers and
booleans (`true`/`false` in the text too). The event names and their levels are the
table in daemon.events. Keys that name secrets are masked here, whoever passes them,
so a token or password never reaches the log; every other value is cut and escaped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import sys
import unicodedata
from typing import Any

from daemon import events
from daemon.clock import iso
from daemon.events import LogEvent

LOGGER_NAME = "smartacct"
_logger = logging.getLogger(LOGGER_NAME)

_SECRET_KEYS = re.compile(r"pass|token|secret", re.IGNORECASE)
_NEEDS_QUOTES = re.compile(r'[\s"=]')
MAX_VALUE = 500                 # characters of one value: a log line never echoes a whole email
MAX_EXACT = 2 ** 53             # larger integers are written as text: a JSON reader would round them


def _escapes() -> dict[int, str]:
    """Every character a terminal acts on or that hides text, written as \\uXXXX: C0, DEL and C1
    controls (U+009B is an escape to a terminal), direction overrides and isolates, zero-width
    characters, line and paragraph separators. Tab, CR and LF become spaces."""
    table = {c: f"\\u{c:04x}" for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))}
    table.update({c: f"\\u{c:04x}" for c in range(0xA0, 0x10000)
                  if unicodedata.category(chr(c)) in ("Cf", "Zl", "Zp")})
    table.update({ord("\t"): " ", ord("\n"): " ", ord("\r"): " "})
    return table


_ESCAPES = _escapes()


def event(ev: LogEvent, **fields: Any) -> None:
    """Log one event of the table in daemon.events, at its level, then key=value pairs."""
    if not isinstance(ev, LogEvent):   # a name spelled out would bypass the table (DESIGN §7)
        raise TypeError(f"log events come from daemon.events, not {ev!r}")
    if _logger.isEnabledFor(ev.level):
        _logger.log(ev.level, ev.name, extra={"fields": fields})


Value = str | int | float | bool


def _clean(key: str, value: Any) -> Value:
    """What the log shows of a value: booleans and finite numbers as they are, anything else
    as text, cut and escaped (it may come from a stranger's email); secrets masked."""
    if _SECRET_KEYS.search(key):
        return "***"
    if isinstance(value, (bool, int)) and abs(value) <= MAX_EXACT:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, dt.datetime):
        return iso(value) or ""
    return ("" if value is None else str(value))[:MAX_VALUE].translate(_ESCAPES)


def _text(value: Value) -> str:
    """A value as the text log writes it: booleans as JSON spells them, not as Python does."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _timestamp(record: logging.LogRecord) -> str:
    return iso(dt.datetime.fromtimestamp(record.created, dt.timezone.utc)) or ""


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.getMessage()]
        for key, value in getattr(record, "fields", {}).items():
            if value is None:
                continue
            text = _text(_clean(key, value))
            if not text or _NEEDS_QUOTES.search(text):
                text = json.dumps(text, ensure_ascii=False)
            parts.append(f"{key}={text}")
        if record.exc_info:
            parts.append("exception=" + json.dumps(self.formatException(record.exc_info)[-2000:].translate(_ESCAPES), ensure_ascii=False))
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Value] = {"time": _timestamp(record), "level": record.levelname, "event": record.getMessage()}
        for key, value in getattr(record, "fields", {}).items():
            if value is not None:
                obj[key] = _clean(key, value)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)[-2000:].translate(_ESCAPES)
        return json.dumps(obj, ensure_ascii=False)


class ReopeningFileHandler(logging.FileHandler):
    """A file handler that logrotate can move away: reopen() on SIGHUP starts a new file."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def reopen() -> None:
    """After logrotate moved the file away (SIGHUP): write to a fresh one."""
    for handler in _logger.handlers:
        if isinstance(handler, ReopeningFileHandler):
            handler.reopen()
    event(events.LOG_REOPENED)


def setup(level: str = "INFO", fmt: str = "text", file: str = "") -> logging.Handler:
    """Route smartacct's events to stderr or a file; called once by the CLI."""
    handler: logging.Handler = ReopeningFileHandler(file, encoding="utf-8") if file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for old in list(_logger.handlers):
        _logger.removeHandler(old)
        old.close()
    _logger.addHandler(handler)
    _logger.setLevel(level)
    _logger.propagate = False
    return handler
