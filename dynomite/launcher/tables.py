# -*- test-case-name: tests.unit.test_tables -*-
"""
Text for people: aligned tables and hash ranges, one way for every command.

``dynomite-cluster``, ``dynomite-admin`` and ``dynomite-bench`` all print
tables of plain columns and ``dynomite-cluster`` and ``dynomite-admin`` both
show which hash ranges a node owns; :func:`format_table` and
:func:`format_ranges` are the one way they do it. This module is a leaf (it
imports only :mod:`dynomite.config.vocabulary`), so the launcher, the
command lines above it and the benchmark may all import it.
"""

from __future__ import annotations

from typing import Any, Collection, Sequence

from dynomite.config.vocabulary import MAX_TOKEN

__all__ = ["cell", "format_ranges", "format_table"]


def cell(value: Any) -> str:
    """How a value reads in a table: None is '-', booleans yes/no, floats with two decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Collection[int] = ()) -> str:
    """
    Columns two spaces apart under a header row, each value written by
    :func:`cell`. Columns are left-aligned, except those whose index is in
    ``right`` (numbers), header included. No line has trailing spaces and
    the text does not end with a newline.
    """
    text_rows = [[str(h) for h in headers]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) if i < len(r) else 0 for r in text_rows) for i in range(len(headers))]
    lines = []
    for r in text_rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_ranges(ranges: Sequence[Sequence[int]]) -> str:
    """
    Inclusive hash ranges ``(lo, hi)`` as text: ``all`` for the whole ring,
    else ``lo..hi`` pieces (``lo`` alone for a one-hash range). The piece that
    starts at 0 comes last, so a wrap-around share reads in ring order
    (``4294967041..4294967295, 0..255``).
    """
    pieces = sorted((int(lo), int(hi)) for lo, hi in ranges)
    if pieces == [(0, MAX_TOKEN)]:
        return "all"
    pieces.sort(key=lambda r: (r[0] == 0, r[0]))
    return ", ".join(str(lo) if lo == hi else f"{lo}..{hi}" for lo, hi in pieces)
