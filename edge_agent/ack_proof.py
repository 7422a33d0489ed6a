"""How far the hub has shown that it holds this device's own events (sans-IO).

The hub's watermark says that it holds *an* event at every seq up to it, not that each is this
device's. After a lost outbox file the same seqs may have been given twice: the hub may hold an
earlier incarnation's event at a seq that this file gave to another one, an event the hub has not
seen yet. Once the hub has processed it, the ack names the seq in ``conflicts``; before that, a
watermark that covers it (the ack of a notice sent ahead of the window, or of another hub
instance's batch) must not delete it.

So each ack also names the messages the hub just stored, as ``[lo, hi, digest]`` (``"got"``, the
digest of the payload: ``wire.envelope.batch_digest``). The uplink records every window batch it
publishes (``sent``): the seqs it read after its cursor, up to the batch's last. A named message
equal to a recorded one proves that span: the hub handled exactly these events at these seqs
and, unless the same ack reports conflicts, stores them. ``reach`` is how far proven spans
continue the acked seqs without a hole; the uplink deletes no further.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_SENT", "AckProof"]

MAX_SENT = 1024
"""Most published batches remembered: far above a window's (resends within it reuse entries)."""


class AckProof:
    """The window batches published, and the spans of seqs the hub has proven it stores."""

    def __init__(self) -> None:
        self._sent: dict[str, tuple[int, int, int]] = {}  # digest: (after, lo, hi)
        self._proven: list[tuple[int, int]] = []  # spans (after, upto]: every held seq proven

    def sent(self, after: int, lo: int, hi: int, digest: str) -> None:
        """A window batch was published (``batch_digest`` of its payload ``digest``): it holds
        every held event after seq ``after``, the first at ``lo``, up to its last at ``hi``."""
        known = self._sent.pop(digest, None)
        self._sent[digest] = (min(after, known[0]) if known else after, lo, hi)
        if len(self._sent) > MAX_SENT:
            del self._sent[next(iter(self._sent))]

    def got(self, named: Iterable[tuple[int, int, str]]) -> None:
        """The hub stored these messages (``[lo, hi, digest]``): each equal to a published batch
        proves its span."""
        for lo, hi, digest in named:
            known = self._sent.get(digest)
            if known is not None and known[1:] == (lo, hi):
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
        for digest in [d for d, (_, _, hi) in self._sent.items() if hi <= acked]:
            del self._sent[digest]
        return upto

    def forget(self) -> None:
        """Seqs were given anew (a renumbering): nothing recorded holds any more."""
        self._sent.clear()
        self._proven.clear()
