"""XOAUTH2 for IMAP and SMTP: Microsoft 365 and Gmail no longer accept passwords.

The access token comes from an admin-configured command (`oauth2_token_command`),
so token refresh stays outside smartacct. The token is a secret: it never reaches
the log or an exception message.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from typing import Callable

from daemon.errors import SmartacctError, TokenCommandError

__all__ = ["TOKEN_COMMAND_TIMEOUT", "TokenCommand", "TokenCommandError", "token_from_command", "xoauth2_string"]

TOKEN_COMMAND_TIMEOUT = 30.0


class TokenCommand:
    """The admin's oauth2_token_command, run for each login, and when it last failed (/metrics)."""

    def __init__(self, command: str, timeout: float = TOKEN_COMMAND_TIMEOUT) -> None:
        self.command = command
        self.timeout = timeout
        self.failed_at: float | None = None       # time.monotonic() of the last failure

    def token(self, error: Callable[[str], SmartacctError]) -> str:
        """A fresh access token; a failure is raised as the caller's `error` (the mailbox's
        MailboxAuthError, the transport's SessionFailure), in words that carry no token."""
        try:
            return token_from_command(self.command, self.timeout)
        except TokenCommandError as exc:
            self.failed_at = time.monotonic()
            raise error(str(exc)) from None


def token_from_command(command: str, timeout: float = TOKEN_COMMAND_TIMEOUT) -> str:
    """Run `command` (no shell) and return the first line it prints."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise TokenCommandError(f"oauth2_token_command cannot be parsed: {exc}") from None
    if not argv:
        raise TokenCommandError("oauth2_token_command is empty")
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise TokenCommandError(f"oauth2_token_command: program not found: {argv[0]}") from None
    except PermissionError:
        raise TokenCommandError(f"oauth2_token_command: program not executable: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise TokenCommandError(f"oauth2_token_command did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise TokenCommandError(f"oauth2_token_command could not run: {exc.strerror}") from None
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = f": {stderr[-1][:200]}" if stderr else ""
        raise TokenCommandError(f"oauth2_token_command failed with exit status {done.returncode}{detail}")
    lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
    if not lines or not lines[0].strip():
        raise TokenCommandError("oauth2_token_command printed no access token")
    return lines[0].strip()


def xoauth2_string(user: str, token: str) -> str:
    """The SASL XOAUTH2 initial response, before base64 (Google's and Microsoft's format)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"
