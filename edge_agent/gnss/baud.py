"""Baud rate detection (sans-IO): is what arrives at this rate NMEA?

A receiver at another rate than the port produces framing errors: bytes, but no sentence
with a valid checksum. ``BaudProbe`` is fed what one rate produced and answers ``True`` once
``min_sentences`` checksummed sentences arrived, ``False`` once ``max_garbage`` bytes came
without one, and ``None`` while it cannot tell yet (the driver then gives up after its time
window, for a silent receiver).
"""

from __future__ import annotations

from edge_agent.gnss.nmea import NmeaStreamParser

__all__ = ["BaudProbe"]


class BaudProbe:
    """Decides whether one baud rate carries valid NMEA."""

    def __init__(self, *, min_sentences: int = 2, max_garbage: int = 600) -> None:
        self._parser = NmeaStreamParser()
        self._need = min_sentences
        self._max_garbage = max_garbage
        self._good = 0
        self._bytes = 0

    def feed(self, data: bytes) -> bool | None:
        """Add bytes read at the rate under test; return the verdict so far."""
        self._bytes += len(data)
        self._good += sum(1 for s in self._parser.feed(data) if s.checked)
        if self._good >= self._need:
            return True
        if self._good == 0 and self._bytes >= self._max_garbage:
            return False
        return None
