"""Per-device seqs on the wire: ranges as eviction notices and acks carry them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = ["batch_digest", "seq_ranges"]


def seq_ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Collapse sorted seqs into inclusive ranges: [1, 2, 3, 7] → [(1, 3), (7, 7)]."""
    ranges: list[tuple[int, int]] = []
    for s in seqs:
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges


def batch_digest(pairs: Iterable[tuple[int, str]]) -> str:
    """The digest of a batch's events as ``(seq, id)`` pairs, taken in seq order.

    The hub names each events message it stored in the device's ack by ``[lo, hi, digest]``
    (``"got"``); the device compares it with the digest of what it published. Equal means the
    hub handled exactly these events at these seqs: the proof that the seqs its watermark covers
    hold this device's events, not an earlier incarnation's that took the same seqs."""
    h = hashlib.blake2b(digest_size=8)
    for seq, event_id in sorted(pairs):
        h.update(b"%d:%s\n" % (seq, event_id.encode("utf-8", "surrogatepass")))
    return h.hexdigest()
