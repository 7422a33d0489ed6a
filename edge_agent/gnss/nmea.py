"""Sans-IO NMEA 0183 stream parser: bytes in, checked sentences out.

``NmeaStreamParser.feed(data)`` takes whatever a serial port, socket or file produced (any chunk
size, one byte at a time included) and returns the complete sentences found so far. It never
raises on input: garbage between sentences is skipped, a sentence cut short by a new ``$`` is
dropped and the parser resynchronises on the new one, a line longer than ``max_length`` is
dropped, and every such event is counted in ``ParserStats``. The buffer it keeps between calls is
bounded by ``max_length``.

Checksums are verified when present (``*hh``); a sentence without one is accepted unless
``require_checksum`` is set (old receivers and some talkers omit it, gpsd accepts them too).
With ``comments``, lines starting with ``#`` are skipped (recorded logs carry such headers).
Every talker is accepted (``GP``, ``GN``, ``GL``, ``GA``, ``GB``, ``BD``, ``GI``, ``GQ``, ``QZ``
...), and proprietary sentences (``$P`` + maker) are passed on with talker ``P``.

This module imports no I/O: drivers read bytes and feed them here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

__all__ = ["DEFAULT_MAX_LENGTH", "NmeaStreamParser", "ParserStats", "Sentence", "checksum"]

# NMEA 0183 allows 82 characters; high-precision and proprietary sentences (u-blox HPG, PUBX)
# run longer, so a line is refused only well beyond what any receiver sends.
DEFAULT_MAX_LENGTH = 200

_DOLLAR = 0x24  # '$' (encapsulated '!' sentences carry AIS, which a van does not need)
_HASH = 0x23  # '#', a comment line in recorded logs


def checksum(body: bytes | bytearray) -> int:
    """XOR of the bytes between ``$`` and ``*`` (the NMEA checksum)."""
    # Fold the body as one big integer: each shift XORs one half onto the other, so the low
    # byte ends up holding the XOR of all bytes, in a few C-level operations.
    x = int.from_bytes(body, "little")
    n = len(body)
    if n > 256:
        top = 2048
        while top < n * 4:
            top <<= 1
        while top > 1024:
            x ^= x >> top
            top >>= 1
    x ^= x >> 1024
    x ^= x >> 512
    x ^= x >> 256
    x ^= x >> 128
    x ^= x >> 64
    x ^= x >> 32
    x ^= x >> 16
    x ^= x >> 8
    return x & 0xFF


class Sentence(NamedTuple):
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


class NmeaStreamParser:
    """Incremental NMEA 0183 parser with a bounded buffer (see the module docstring)."""

    def __init__(
        self,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        require_checksum: bool = False,
        comments: bool = False,
    ) -> None:
        if max_length < 16:
            raise ValueError("max_length must allow at least a short sentence (16 bytes)")
        self._buf = bytearray()
        self._max = max_length
        self._require_checksum = require_checksum
        # Recorded logs (gpsd's among them) carry '#' comment lines, which may quote sentences.
        self._comments = comments
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
        limit = self._max
        # Everything up to the last line end is complete lines: split them all at once (CR,
        # LF or CRLF end a line), then look at each.
        cut = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
        if cut >= 0:
            block = bytes(buf[: cut + 1])
            del buf[: cut + 1]
            check = self._check
            for raw in block.replace(b"\r", b"\n").split(b"\n"):
                if not raw:
                    continue
                line = raw
                if line[0] != _DOLLAR:
                    if line[0] == _HASH and self._comments:
                        continue
                    i = line.find(b"$")
                    stats.garbage_bytes += _garbage(line if i < 0 else line[:i])
                    if i < 0:
                        continue
                    line = line[i:]
                last = line.rfind(b"$")
                if last > 0:
                    # Sentences that a new '$' cut short: resynchronise on the last one.
                    stats.truncated += line.count(b"$", 0, last)
                    line = line[last:]
                if len(line) > limit:
                    stats.too_long += 1
                    continue
                sentence = check(line)
                if sentence is not None:
                    out.append(sentence)
        if len(buf) > limit:
            # An unfinished line longer than any sentence: keep at most its last '$' onwards.
            last = buf.rfind(b"$")
            stats.garbage_bytes += _garbage(bytes(buf if last < 0 else buf[:last]))
            if last > 0:
                stats.truncated += buf.count(b"$", 0, last)
            if last < 0:
                buf.clear()
            elif len(buf) - last > limit:
                stats.too_long += 1
                buf.clear()
            else:
                del buf[:last]
        return out

    def _check(self, line: bytes) -> Sentence | None:
        stats = self.stats
        if line[-3:-2] == b"*":
            body = line[1:-3]
            cs = line[-2:]
            try:
                # int() would also take "+7" or " 7": a checksum is two hex digits.
                ok = cs.isalnum() and checksum(body) == int(cs, 16)
            except ValueError:
                ok = False
            if not ok:
                stats.bad_checksum += 1
                return None
            checked = True
        elif b"*" in line:
            stats.bad_checksum += 1
            return None
        else:
            stats.no_checksum += 1
            if self._require_checksum:
                return None
            body = line[1:]
            checked = False
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            stats.bad_chars += 1
            return None
        if not text.isprintable():
            stats.bad_chars += 1
            return None
        parts = text.split(",")
        address = parts[0]
        if not address.isalnum():
            stats.bad_address += 1
            return None
        if address[0] == "P" and len(address) >= 3:
            talker, kind = "P", address[1:]
        elif len(address) >= 5:
            talker, kind = address[:2], address[2:]
        else:
            stats.bad_address += 1
            return None
        stats.sentences += 1
        return Sentence(talker, kind, tuple(parts), checked)


def _garbage(skipped: bytes) -> int:
    # Blanks between sentences are framing, not garbage.
    return len(skipped) - skipped.count(b" ")
