"""Aligned text tables for the admin commands: a header, then one line per row.

Columns are as wide as their widest value, up to a cap; a longer value is cut with "…", so a
long address never pushes the columns after it out of line (`--json` has every value whole).
Widths count what a terminal shows: wide (East Asian) characters take two cells, combining
marks none.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

ELLIPSIS = "…"
GAP = "  "


@dataclass(frozen=True)
class Column:
    """One column: its header, the key of the value in each row, and the widest it may be."""

    header: str
    key: str
    cap: int = 40
    right: bool = False     # numbers line up on the right


def _escapes() -> dict[int, str]:
    """What a terminal acts on or what hides text (C0, DEL and C1 controls, direction overrides,
    zero-width characters), written as \\uXXXX: stored values come from strangers' mail."""
    table = {c: f"\\u{c:04x}" for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))}
    table.update({c: f"\\u{c:04x}" for c in range(0xA0, 0x10000)
                  if unicodedata.category(chr(c)) in ("Cf", "Zl", "Zp")})
    del table[ord("\n")], table[ord("\t")]
    return table


_ESCAPES = _escapes()


def printable(text: str) -> str:
    """`text` safe to print to a terminal; new lines and tabs stay."""
    return text.translate(_ESCAPES)


def cells(text: str) -> int:
    """The width of `text` on a terminal."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def fit(text: str, width: int) -> str:
    """`text` cut to at most `width` cells, with "…" where it was cut."""
    if cells(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = cells(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + ELLIPSIS


def one_line(value: Any) -> str:
    """A value as one table cell: None as "-", every run of whitespace (new lines too) as one space."""
    if value is None or value == "":
        return "-"
    return printable(" ".join(str(value).split())) or "-"


def render(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> str:
    """The table as text, ending with a new line; the last column is not padded."""
    return "".join(f"{line}\n" for line in lines(columns, rows))


def lines(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The table line by line, the header first: printed one at a time, so that a reader that
    leaves early (`| head`) is noticed at the next line."""
    texts = [[one_line(row.get(c.key)) for c in columns] for row in rows]
    widths = [min(c.cap, max([cells(c.header), *(cells(t[i]) for t in texts)])) for i, c in enumerate(columns)]
    for line in [[c.header for c in columns], *texts]:
        out = []
        for i, (c, text) in enumerate(zip(columns, line)):
            text = fit(text, widths[i])
            pad = " " * (widths[i] - cells(text))
            last = i == len(columns) - 1
            out.append(pad + text if c.right else text + ("" if last else pad))
        yield GAP.join(out).rstrip()
