"""Reading new mail in few round trips: one FETCH RFC822.SIZE for up to SIZE_BATCH UIDs, then
the bodies in batches capped by count and by bytes; an oversized message is fetched as its
header only (DESIGN §5 mailbox.max_message_size), so it costs no more than a small one.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from daemon.mail.imap.connection import Connection

FETCH_BATCH = 100         # UIDs per body FETCH, and per claim: how instances share a backlog (DESIGN §8)
FETCH_BATCH_BYTES = 50_000_000
SIZE_BATCH = 500          # UIDs per RFC822.SIZE FETCH
HEADER_COST = 65_536      # bytes an oversized message counts for in a batch: its header, at most


def sizes(conn: Connection, uids: Sequence[int]) -> dict[int, int]:
    """UID -> RFC822.SIZE; a UID expunged meanwhile is missing."""
    data = conn.do("FETCH RFC822.SIZE", lambda c: c.fetch(uids, ["RFC822.SIZE"]))
    return {int(uid): int(item[b"RFC822.SIZE"]) for uid, item in data.items() if b"RFC822.SIZE" in item}


def batches(uids: Sequence[int], sizes: dict[int, int], max_message_size: int,
            batch_size: int) -> Iterator[list[int]]:
    """Runs of UIDs in order, capped by count and by bytes to download."""
    batch: list[int] = []
    total = 0
    for uid in uids:
        if uid not in sizes:
            continue                      # expunged meanwhile
        cost = min(sizes[uid], HEADER_COST) if sizes[uid] > max_message_size else sizes[uid]
        if batch and (len(batch) >= batch_size or total + cost > FETCH_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += cost
    if batch:
        yield batch


def contents(conn: Connection, uids: list[int], sizes: dict[int, int],
             max_message_size: int) -> dict[int, tuple[bytes, bool]]:
    """UID -> (bytes, truncated), in UID order: one FETCH for the whole messages, one for the
    headers of the oversized ones. A message another session expunged meanwhile is missing."""
    whole = [u for u in uids if sizes[u] <= max_message_size]
    heads = [u for u in uids if sizes[u] > max_message_size]
    raw: dict[int, tuple[bytes, bool]] = {}
    if whole:
        data = conn.do("FETCH BODY[]", lambda c: c.fetch(whole, ["BODY.PEEK[]"]))
        # An expunged message comes back with an empty body: skip it.
        raw.update((int(u), (item[b"BODY[]"], False)) for u, item in data.items() if item.get(b"BODY[]"))
    if heads:
        data = conn.do("FETCH BODY[HEADER]", lambda c: c.fetch(heads, ["BODY.PEEK[HEADER]"]))
        raw.update((int(u), (item[b"BODY[HEADER]"], True)) for u, item in data.items()
                   if item.get(b"BODY[HEADER]"))
    return {uid: raw[uid] for uid in uids if uid in raw}
