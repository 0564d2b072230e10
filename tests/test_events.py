"""The one table of log events (daemon/events.py, DESIGN §7) is the whole vocabulary of the log.

Read from the source with `ast`, over daemon/, parsers/ and models/: every place that logs names
an event of the table (`log.event(events.X, ...)`, `Log(events.X, ...)`) — so no name is built at
run time, and none is spelled out as a string — and every event of the table is logged somewhere.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import pytest

from daemon import events, log

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "parsers", "models")
TABLE = Path("daemon/events.py")
CONSTANTS = {name: value for name, value in vars(events).items() if isinstance(value, events.LogEvent)}

# The places that pass on an event chosen elsewhere: the expression they log, by file and function.
RELAYS = {
    ("daemon/engine/apply.py", "flush_log", "ev"),                 # the decision's lines, after the commit
    ("daemon/core/decide.py", "transition_decision", "t.event"),   # workflow.TRANSITION_EVENTS
}


def sources() -> dict[Path, ast.Module]:
    return {path.relative_to(ROOT): ast.parse(path.read_text(encoding="utf-8"), str(path))
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def functions(tree: ast.Module) -> dict[ast.AST, str]:
    """Each node of the module, with the name of the function it is in ("" at module level)."""
    where: dict[ast.AST, str] = {}

    def visit(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else name
            where[child] = inner
            visit(child, inner)
    visit(tree, "")
    return where


def emits(call: ast.Call) -> bool:
    """`log.event(...)` (daemon.log) or `Log(...)` (a decision's line, written by the applier)."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr in ("event", "warning", "error") and isinstance(func.value, ast.Name) \
            and func.value.id == "log"
    return isinstance(func, ast.Name) and func.id == "Log"


def constant(node: ast.expr) -> str | None:
    """`events.NAME` -> NAME."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "events":
        return node.attr
    return None


def test_every_event_logged_is_in_the_table_and_none_is_spelled_out() -> None:
    wrong = []
    for path, tree in sources().items():
        if path == TABLE:
            continue
        where = functions(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and emits(node):
                first = node.args[0] if node.args else None
                name = constant(first) if first is not None else None
                relay = first is not None and (str(path), where[node], ast.unparse(first)) in RELAYS
                if not relay and name not in CONSTANTS:
                    wrong.append(f"{path}:{node.lineno}: {ast.unparse(node)[:100]}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "LogEvent":
                wrong.append(f"{path}:{node.lineno}: a LogEvent made outside the table")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in events.BY_NAME:
                wrong.append(f"{path}:{node.lineno}: {node.value!r} spelled out; use events.{constant_name(node.value)}")
    assert not wrong, "\n".join(wrong)


def constant_name(name: str) -> str:
    return next(k for k, v in CONSTANTS.items() if v.name == name)


def test_every_event_of_the_table_is_logged_somewhere() -> None:
    used = {constant(node) for path, tree in sources().items() if path != TABLE
            for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert sorted(set(CONSTANTS) - used) == []


def test_the_table_is_well_formed() -> None:
    names = [e.name for e in events.EVENTS]
    assert len(names) == len(set(names)) == len(CONSTANTS)
    for name, ev in CONSTANTS.items():
        assert re.fullmatch(r"[a-z]+\.[a-z_]+", ev.name), ev
        assert name == ev.name.replace(".", "_").upper(), (name, ev.name)
        assert ev.level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR), ev
        assert ev.meaning and "\n" not in ev.meaning and "|" not in ev.meaning, ev


def test_a_name_spelled_out_is_refused_at_run_time() -> None:
    with pytest.raises(TypeError, match="daemon.events"):
        log.event("request.confirmed")  # type: ignore[arg-type]


def readme_table() -> str:
    """The table of events in the README's section "The log"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## The log\n", 1)[1].split("\n## ", 1)[0]
    start = section.index("| event | level | meaning |")
    rows = section[start:].split("\n\n", 1)[0]
    return rows.rstrip("\n") + "\n"


def test_the_readme_lists_every_event_as_the_code_does() -> None:
    assert readme_table() == events.markdown_table(), \
        "README.md's table in \"The log\" is stale: replace it with the output of `python -m daemon.events`"


def test_the_events_the_old_readme_missed_are_listed() -> None:
    """Issue 15: the new admin looked these up in vain."""
    missed = {"database.unavailable": "ERROR", "mailbox.unavailable": "WARNING", "message.too_large": "WARNING",
              "imap.file_skipped": "WARNING", "help.answered": "INFO", "status.answered": "INFO",
              "message.not_a_request": "INFO", "bounce.ignored": "INFO", "checks.done": "INFO",
              "smtp.connected": "DEBUG", "imap.folder_created": "INFO", "imap.uidvalidity_changed": "WARNING",
              "metrics.database_unavailable": "WARNING", "database.closed": "INFO"}
    table = readme_table()
    for name, level in missed.items():
        assert f"| `{name}` | {level} |" in table, name
