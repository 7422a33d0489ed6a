"""Size limits of the wire, in one place: the outbox and the uplink derive theirs from here.

A batch on the wire is ``{"events":[...]}`` of at most ``BATCH_MAX_BYTES`` (DESIGN §2); the
uplink may be configured to smaller batches (``uplink.batch_max_bytes``). An event is accepted
only if it fits alone in one batch of the configured size, so nothing accepted can block the
queue behind it.
"""

from __future__ import annotations

__all__ = [
    "ACK_MAX_BYTES",
    "ACK_MAX_GOT",
    "ACK_MAX_RANGES",
    "BATCH_MAX_BYTES",
    "BATCH_OVERHEAD",
    "NOTICE_MAX_RANGES",
    "batch_body_limit",
]

BATCH_MAX_BYTES = 256 * 1024
"""Largest payload of one events batch on the wire (DESIGN §2)."""

BATCH_OVERHEAD = len(b'{"events":[]}')
"""Bytes of a batch that are not event bodies (the separators between bodies aside)."""

NOTICE_MAX_RANGES = 1000
"""Most seq ranges in one ``outbox.evicted`` notice (about 25 KiB): larger lists are split."""


ACK_MAX_RANGES = 100
"""Most conflict ranges in one ack (the hub says when it cut the list: ``"got"`` is empty)."""

ACK_MAX_GOT = 32
"""Most stored messages one ack names in ``"got"``."""

ACK_MAX_BYTES = 16 * 1024
"""Largest ack a device reads: the ranges and names above at their longest fit with room."""


def batch_body_limit(batch_max_bytes: int = BATCH_MAX_BYTES) -> int:
    """The largest envelope that fits alone in one batch of ``batch_max_bytes``."""
    return min(batch_max_bytes, BATCH_MAX_BYTES) - BATCH_OVERHEAD
