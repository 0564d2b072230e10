"""Where incoming mail waits: the Mailbox protocol and the Maildir backend (DESIGN §5).

A message leaves the inbox only through `file()`, which the ingest path calls after
the message's effects are committed (DESIGN §4, nothing lost).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Collection, Iterator, Protocol, Sequence

from models.message import Folder


@dataclass(frozen=True)
class InboxMessage:
    key: str          # stable while the message waits: a Maildir file name, or "UIDVALIDITY:UID"
    raw: bytes        # the whole message; only its header when `truncated`
    size: int         # the full size in bytes
    truncated: bool = False   # over max_message_size: not downloaded whole


Claim = Callable[[Sequence[str]], Collection[str]]
"""Given a batch of waiting messages' keys, the ones this instance handles (DESIGN §8)."""


class Mailbox(Protocol):
    def fetch(self, claim: Claim | None = None) -> Iterator[InboxMessage]:
        """Every message waiting in the inbox, oldest first, fetched in batches. With `claim`,
        each batch's keys are offered to it before a byte of their bodies is read, and only the
        messages it returns are fetched and yielded: the others are another instance's."""

    def file(self, key: str, folder: Folder) -> None:
        """Move a handled message out of the inbox into `folder` (created when missing)."""

    def restore(self, key: str, message_id: str | None = None, content_hash: str | None = None) -> str:
        """Move a quarantined message back into the inbox (`quarantine retry`); returns its new key.
        `key` is where it waited in the inbox; an IMAP server finds it by Message-ID (or content hash)."""

    def file_many(self, items: Sequence[tuple[str, Folder]]) -> None:
        """file() for a batch, in as few server round trips as the backend allows."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Block until new mail may be waiting, `timeout` seconds pass, or `stop` is set."""

    def close(self) -> None:
        """Release connections; safe to call twice."""
