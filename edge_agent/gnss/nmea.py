"""Sans-IO NMEA 0183 stream parser: bytes in, checked sentences out.

``NmeaStreamParser.feed(data)`` takes whatever a serial port, socket or file produced (any chunk
size, one byte at a time included) and returns the complete sentences found so far. It never
raises on input: garbage between sentences is skipped, a sentence cut short by a new ``$`` is
dropped and the parser resynchronises on the new one, a line longer than ``max_length`` is
dropped, and every such event is counted in ``ParserStats``. The buffer it keeps between calls is
bounded by ``max_length``.

Checksums are verified when present (``*hh``); a sentence without one is accepted unless
``require_checksum`` is set (old receivers and some talkers omit it, gpsd accepts them too).
Every talker is accepted (``GP``, ``GN``, ``GL``, ``GA``, ``GB``, ``BD``, ``GI``, ``GQ``, ``QZ``
...), and proprietary sentences (``$P`` + maker) are passed on with talker ``P``.

This module imports no I/O: drivers read bytes and feed them here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["DEFAULT_MAX_LENGTH", "NmeaStreamParser", "ParserStats", "Sentence", "checksum"]

# NMEA 0183 allows 82 characters; high-precision and proprietary sentences (u-blox HPG, PUBX)
# run longer, so a line is refused only well beyond what any receiver sends.
DEFAULT_MAX_LENGTH = 200

_DOLLAR = 0x24  # '$' (encapsulated '!' sentences carry AIS, which a van does not need)
_CR = 0x0D
_LF = 0x0A
_HEX = frozenset(b"0123456789ABCDEFabcdef")
# Bytes that may appear inside a sentence: printable ASCII (NMEA reserves the rest).
_PRINTABLE = bytes(range(0x20, 0x7F))


def checksum(body: bytes) -> int:
    """XOR of the bytes between ``$`` and ``*`` (the NMEA checksum)."""
    # Fold the body as one big integer: log2(n) big-int operations instead of n Python steps.
    x = int.from_bytes(body, "little")
    n = len(body)
    while n > 1:
        half = (n + 1) >> 1
        bits = half << 3
        x = (x >> bits) ^ (x & ((1 << bits) - 1))
        n = half
    return x


@dataclass(frozen=True, slots=True)
class Sentence:
    """One checked NMEA sentence.

    ``fields[0]`` is the address (``GPGGA``), so ``fields[n]`` is field *n* as the NMEA
    standard numbers them. ``talker`` is ``GP``, ``GN`` ... or ``P`` for proprietary sentences;
    ``kind`` is the formatter (``GGA``) or, for proprietary ones, the rest of the address.
    """

    talker: str
    kind: str
    fields: tuple[str, ...]
    checked: bool

    @property
    def address(self) -> str:
        """The sentence address, for example ``GPGGA``."""
        return self.fields[0]


@dataclass(slots=True)
class ParserStats:
    """What the parser saw: accepted sentences and each kind of rejected input."""

    sentences: int = 0
    bad_checksum: int = 0
    no_checksum: int = 0
    bad_chars: int = 0
    bad_address: int = 0
    truncated: int = 0
    too_long: int = 0
    garbage_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for health reports and benchmarks)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _split_address(address: str) -> tuple[str, str] | None:
    if len(address) < 3 or not address.isalnum():
        return None
    if address[0] == "P":
        return "P", address[1:]
    if len(address) < 5:
        return None
    return address[:2], address[2:]


class NmeaStreamParser:
    """Incremental NMEA 0183 parser with a bounded buffer (see the module docstring)."""

    def __init__(
        self, *, max_length: int = DEFAULT_MAX_LENGTH, require_checksum: bool = False
    ) -> None:
        if max_length < 16:
            raise ValueError("max_length must allow at least a short sentence (16 bytes)")
        self._buf = bytearray()
        self._max = max_length
        self._require_checksum = require_checksum
        self.stats = ParserStats()

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a sentence (at most ``max_length``)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial sentence (after a reconnect or a baud rate change)."""
        self._buf.clear()

    def feed(self, data: bytes) -> list[Sentence]:
        """Add bytes; return the complete, valid sentences they finish, in order."""
        buf = self._buf
        buf += data
        out: list[Sentence] = []
        stats = self.stats
        pos = 0
        n = len(buf)
        while pos < n:
            start = buf.find(_DOLLAR, pos, n)
            if start < 0:
                stats.garbage_bytes += _count_garbage(buf, pos, n)
                pos = n
                break
            if start > pos:
                stats.garbage_bytes += _count_garbage(buf, pos, start)
            end = _find_eol(buf, start + 1, n)
            restart = buf.find(_DOLLAR, start + 1, n if end < 0 else end)
            if restart >= 0:
                # A new sentence began before this one ended: the first was cut short.
                stats.truncated += 1
                pos = restart
                continue
            if end < 0:
                if n - start > self._max:
                    stats.too_long += 1
                    pos = n
                else:
                    pos = start
                break
            if end - start > self._max:
                stats.too_long += 1
            else:
                sentence = self._check(bytes(buf[start:end]))
                if sentence is not None:
                    out.append(sentence)
            pos = end + 1
        del buf[:pos]
        return out

    def _check(self, line: bytes) -> Sentence | None:
        stats = self.stats
        if line.translate(None, _PRINTABLE):
            stats.bad_chars += 1
            return None
        star = line.rfind(b"*")
        if star >= 0:
            cs = line[star + 1 :]
            if len(cs) != 2 or cs[0] not in _HEX or cs[1] not in _HEX:
                stats.bad_checksum += 1
                return None
            body = line[1:star]
            if checksum(body) != int(cs, 16):
                stats.bad_checksum += 1
                return None
            checked = True
        else:
            stats.no_checksum += 1
            if self._require_checksum:
                return None
            body = line[1:]
            checked = False
        parts = body.decode("ascii").split(",")
        split = _split_address(parts[0])
        if split is None:
            stats.bad_address += 1
            return None
        stats.sentences += 1
        return Sentence(split[0], split[1], tuple(parts), checked)


def _find_eol(buf: bytearray, lo: int, hi: int) -> int:
    lf = buf.find(_LF, lo, hi)
    cr = buf.find(_CR, lo, hi if lf < 0 else lf)
    return cr if cr >= 0 else lf


def _count_garbage(buf: bytearray, lo: int, hi: int) -> int:
    # Line ends and blanks between sentences are framing, not garbage.
    return (hi - lo) - sum(buf.count(c, lo, hi) for c in (b"\r", b"\n", b" "))
