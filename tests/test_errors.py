"""The exception tree is drawn once, in daemon/errors.py, and the drawing is the truth (issue 12)."""

from __future__ import annotations

import importlib
import pkgutil
import re

import daemon
import models
import parsers
from daemon import errors
from daemon.errors import SmartacctError

# "     │    └── MailboxAuthError      1    the server refused ..." -> name, exit status
DRAWN = re.compile(r"^(?P<lead>[ │├└─]*)(?P<name>[A-Z]\w+)\s+(?P<exit>\d)\s+\S")


def drawn_tree() -> dict[str, tuple[str | None, int]]:
    """Each class in the docstring's drawing -> (the class drawn above it, its exit status)."""
    tree: dict[str, tuple[str | None, int]] = {}
    stack: list[tuple[int, str]] = []            # (column of the name, name) of the open branches
    for line in (errors.__doc__ or "").splitlines():
        match = DRAWN.match(line)
        if not match:
            continue
        column = len(match["lead"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        tree[match["name"]] = (stack[-1][1] if stack else None, int(match["exit"]))
        stack.append((column, match["name"]))
    return tree


def every_subclass(cls: type[SmartacctError]) -> set[type[SmartacctError]]:
    found: set[type[SmartacctError]] = set()
    for sub in cls.__subclasses__():
        found |= {sub} | every_subclass(sub)
    return found


def import_everything() -> None:
    for package in (daemon, parsers, models):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(info.name)


def test_the_drawing_shows_every_error_with_its_parent_and_exit_status() -> None:
    tree = drawn_tree()
    classes = {SmartacctError} | every_subclass(SmartacctError)
    assert set(tree) == {cls.__name__ for cls in classes}
    for cls in classes:
        parent, exit_status = tree[cls.__name__]
        assert parent == (None if cls is SmartacctError else cls.__bases__[0].__name__), cls
        assert exit_status == cls.exit_code, cls


def test_no_module_but_errors_defines_a_smartacct_error() -> None:
    import_everything()
    elsewhere = {f"{cls.__module__}.{cls.__qualname__}" for cls in every_subclass(SmartacctError)
                 if cls.__module__ != "daemon.errors"}
    assert elsewhere == set()


def test_a_config_error_exits_2_and_the_others_1() -> None:
    assert errors.ConfigError("mailbox.port", "not a number").exit_code == 2
    assert errors.AdminError("no request SA-000001").exit_code == 1
    assert errors.MetricsError("metrics.listen: cannot listen").exit_code == 1
    assert errors.TokenCommandError("oauth2_token_command is empty").exit_code == 1
