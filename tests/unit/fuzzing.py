"""Hypothesis strategies the fuzz tests share."""

from __future__ import annotations

from typing import List

from hypothesis import strategies as st


@st.composite
def cut(draw: st.DrawFn, data: bytes) -> List[bytes]:
    """*data* cut at random offsets (empty chunks included, as a read may be)."""
    offsets = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    edges = [0] + offsets + [len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]
