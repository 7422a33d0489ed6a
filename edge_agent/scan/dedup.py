"""Scan dedup: the same code seen again within a window is the same scan.

Pure: the caller passes the time. The window slides with every sighting, so a code that stays
in front of a camera for a minute (seen in every frame) is one scan; once it has been out of
sight (or not scanned) for the whole window, the next sighting is a new scan.
"""

from __future__ import annotations

__all__ = ["Deduper"]


class Deduper:
    """Decides which sightings of a code are new scans, per key (source, symbology, text)."""

    def __init__(self, window_s: float) -> None:
        if window_s < 0:
            raise ValueError(f"dedup window must be >= 0 s, got {window_s}")
        self.window_s = window_s
        self._last: dict[tuple[str, str, str], float] = {}
        self.suppressed = 0

    def is_new(self, source: str, symbology: str, text: str, now: float) -> bool:
        """Record a sighting at ``now`` (seconds, monotonic); True if it is a new scan."""
        key = (source, symbology, text)
        last = self._last.get(key)
        self._last[key] = now
        if len(self._last) > 4096:
            self._forget(now)
        if last is not None and now - last <= self.window_s:
            self.suppressed += 1
            return False
        return True

    def _forget(self, now: float) -> None:
        self._last = {k: t for k, t in self._last.items() if now - t <= self.window_s}
