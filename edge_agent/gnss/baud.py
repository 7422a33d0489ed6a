"""What the serial driver needs to know about NMEA receivers (sans-IO).

- ``STANDARD_BAUDS``: the rates receivers ship at, in the autodetect's order of trial;
- ``BaudProbe``: is what arrives at this rate NMEA? A receiver at another rate than the port
  produces framing errors: bytes, but no sentence with a valid checksum. The probe is fed what
  one rate produced and answers ``True`` once ``min_sentences`` checksummed sentences arrived,
  ``False`` once ``max_garbage`` bytes came without one, and ``None`` while it cannot tell yet
  (the driver, ``edge_agent.drivers.serialport``, gives up after its time window);
- ``epoch_key``: where a recorded log's epochs change, for paced file replay;
- ``complete_sentence``: an init sentence of a receiver profile, checksum added.
"""

from __future__ import annotations

import re

from edge_agent.gnss.nmea import NmeaStreamParser, checksum

__all__ = ["STANDARD_BAUDS", "BaudProbe", "complete_sentence", "epoch_key"]

# Receivers ship at 9600 (most), 4800 (NMEA's own rate, older units), 38400/115200 (u-blox,
# 10 Hz set-ups); the order is the autodetect's order of trial.
STANDARD_BAUDS = (9600, 4800, 38400, 115200, 57600, 19200)

_TIME_FIELD = re.compile(rb"^\$[A-Z]{2}(?:GGA|RMC|GNS|ZDA),(\d{6}(?:\.\d*)?),")


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


def epoch_key(line: bytes) -> bytes | None:
    """The time of day of a GGA/RMC/GNS/ZDA line (an epoch boundary where it changes)."""
    m = _TIME_FIELD.match(line)
    return None if m is None else m.group(1)


def complete_sentence(line: str) -> bytes:
    """An init sentence with ``*hh`` and CRLF, adding the checksum when it is missing."""
    line = line.strip()
    if "*" not in line:
        body = line[1:].encode("ascii")
        line = f"{line}*{checksum(body):02X}"
    return line.encode("ascii") + b"\r\n"
