"""Per-device seqs on the wire: ranges as eviction notices and acks carry them."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["seq_ranges"]


def seq_ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Collapse sorted seqs into inclusive ranges: [1, 2, 3, 7] → [(1, 3), (7, 7)]."""
    ranges: list[tuple[int, int]] = []
    for s in seqs:
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges
