"""How far the hub has shown that it holds this device's own events (sans-IO).

The hub's watermark says that it holds *an* event at every seq up to it, not that each is this
device's. After a lost outbox file the same seqs may have been given twice: the hub may hold an
earlier incarnation's event at a seq that this file gave to another one, an event the hub has not
seen yet. Once the hub has processed it, the ack names the seq in ``conflicts``; before that, a
watermark that covers it (the ack of a notice sent ahead of the window, or of another hub
instance's batch) must not delete it.

So each ack also names the messages the hub just stored, as ``[lo, hi, digest]`` (``"got"``,
``wire.seqs.batch_digest`` of their ``(seq, id)`` pairs). The uplink records every window batch
it publishes (``sent``): the seqs it read after its cursor, up to the batch's last. A named batch
whose digest equals the recorded one proves that span: the hub handled exactly these events at
these seqs and, unless the same ack reports conflicts, stores them. ``reach`` is how far proven
spans continue the acked seqs without a hole; the uplink deletes no further.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from edge_agent.wire.seqs import batch_digest

__all__ = ["AckProof", "body_id"]

MAX_SENT = 1024
"""Most published batches remembered: far above a window's (resends within it reuse entries)."""


def body_id(body: bytes) -> str | None:
    """The ``id`` of an encoded envelope; None if it has none. Envelopes the outbox encodes
    begin with it, so it is cut out without parsing the rest."""
    head = b'{"id":"'
    if body.startswith(head):
        end = body.find(b'"', len(head))
        if end > 0 and b"\\" not in body[len(head) : end]:
            return body[len(head) : end].decode("utf-8", "surrogateescape")
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    event_id = obj.get("id") if isinstance(obj, dict) else None
    return event_id if isinstance(event_id, str) else None


class AckProof:
    """The window batches published, and the spans of seqs the hub has proven it stores."""

    def __init__(self) -> None:
        self._sent: dict[tuple[int, int], tuple[int, str]] = {}
        self._proven: list[tuple[int, int]] = []  # spans (after, upto]: every held seq proven

    def sent(self, after: int, rows: Sequence[tuple[int, bytes]]) -> None:
        """A window batch was published: ``rows`` (seq, body) are every held event after seq
        ``after`` up to the last of them."""
        if not rows:
            return
        pairs = []
        for seq, body in rows:
            event_id = body_id(body)
            if event_id is None:
                return  # cannot be proven: it waits for another batch
            pairs.append((seq, event_id))
        key = (rows[0][0], rows[-1][0])
        known = self._sent.get(key)
        self._sent[key] = (min(after, known[0]) if known else after, batch_digest(pairs))
        if len(self._sent) > MAX_SENT:
            del self._sent[next(iter(self._sent))]

    def got(self, named: Iterable[tuple[int, int, str]]) -> None:
        """The hub stored these messages (``[lo, hi, digest]``): each matching a published batch
        proves its span."""
        for lo, hi, digest in named:
            known = self._sent.get((lo, hi))
            if known is not None and known[1] == digest:
                self._proven.append((known[0], hi))

    def reach(self, acked: int) -> int:
        """The last seq up to which every held event after ``acked`` is proven (``acked`` when
        none is); forgets what is acked already."""
        upto = acked
        self._proven = spans = sorted(s for s in self._proven if s[1] > acked)
        for after, end in spans:
            if after > upto:
                break
            upto = max(upto, end)
        for key in [k for k in self._sent if k[1] <= acked]:
            del self._sent[key]
        return upto

    def forget(self) -> None:
        """Seqs were given anew (a renumbering): nothing recorded holds any more."""
        self._sent.clear()
        self._proven.clear()
