"""Frame parsers for serial distance sensors, sans-IO: ``feed(bytes) -> [metres, ...]``.

A bay sensor hangs over the bay (or faces it) and streams frames; a van in the bay is a short
distance. The parsers take whatever bytes arrive (split anywhere, with line noise, a sensor
plugged in mid-frame), keep at most one frame's bytes, resynchronise on the next header and
count what they dropped:

- ``frames``: good frames; ``no_reading``: good frames that carry no distance (signal too weak,
  overexposed, inside the blind zone); ``bad_frames``: a header whose frame failed its checksum
  or shape (the parser moves one byte on and looks again); ``garbage``: bytes outside any frame.

Formats (the facts come from the vendors' documents named beside each):

- ``tfmini``: Benewake TFmini / TFmini-S / TFmini Plus / TF-Luna, 9 bytes at 115200 baud.
- ``a02yyuw``: DFRobot A02YYUW ultrasonic (SEN0311), 4 bytes at 9600 baud.
- ``maxbotix``: MaxBotix HRXL-MaxSonar (MB7xxx) ASCII ``R1234\\r`` at 9600 baud, millimetres.

A format is data (``BinaryFormat``: header, length, decoder), read by one generic parser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "A02YYUW",
    "FORMATS",
    "TFMINI",
    "BinaryFormat",
    "BinaryFrameParser",
    "DistanceParser",
    "DistanceProtocol",
    "MaxbotixParser",
    "default_baud",
    "make_parser",
]

DistanceProtocol = Literal["tfmini", "a02yyuw", "maxbotix"]


class DistanceParser(Protocol):
    """What every parser offers: ``feed`` and its counters (module docstring)."""

    frames: int
    no_reading: int
    bad_frames: int
    garbage: int

    def feed(self, data: bytes) -> list[float]:
        """Add bytes; return the distances (metres) of the frames they completed."""
        ...


def _sum8(frame: bytes) -> bool:
    # Both binary formats end in the low byte of the sum of every byte before it
    # (TFmini-S / TF-Luna product manuals: "Checksum: low 8 bits of the sum of Byte0..Byte7";
    # DFRobot SEN0311 wiki: "SUM = (0xFF + Data_H + Data_L) & 0x00FF").
    return sum(frame[:-1]) & 0xFF == frame[-1]


def _tfmini(frame: bytes) -> float | None:
    # Benewake TFmini-S / TF-Luna product manuals, "standard data format (cm)":
    # 0x59 0x59, Dist_L, Dist_H (cm), Strength_L, Strength_H, Temp_L, Temp_H, Checksum.
    # (TFmini: bytes 6-7 are mode and a spare byte; they are not read here.)
    dist_cm = frame[2] | frame[3] << 8
    strength = frame[4] | frame[5] << 8
    # Strength below 100 or equal to 65535 (overexposed) makes Dist unreliable; the sensors
    # then send Dist 0 (TF-Luna) or -1 (65535, TFmini-S / Plus): no reading either way.
    if strength < 100 or strength == 0xFFFF or dist_cm in (0, 0xFFFF):
        return None
    return dist_cm / 100.0


def _a02yyuw(frame: bytes) -> float | None:
    # DFRobot SEN0311 (A02YYUW) wiki: 0xFF, Data_H, Data_L, SUM; distance = H*256 + L in mm;
    # range 30-4500 mm: a 0 is not a measurement (inside the blind zone).
    dist_mm = frame[1] << 8 | frame[2]
    if dist_mm == 0:
        return None
    return dist_mm / 1000.0


@dataclass(frozen=True, slots=True)
class BinaryFormat:
    """A fixed-length binary frame: header, total length, checksum and decoder."""

    name: str
    header: bytes
    length: int
    decode: Callable[[bytes], float | None]
    """The frame (checksum already checked) -> metres, or None when it carries no reading."""
    checksum: Callable[[bytes], bool] = _sum8
    baud: int = 9600


TFMINI = BinaryFormat("tfmini", b"\x59\x59", 9, _tfmini, baud=115200)  # TFmini-S default rate
A02YYUW = BinaryFormat("a02yyuw", b"\xff", 4, _a02yyuw, baud=9600)  # SEN0311 wiki: 9600 8N1


class BinaryFrameParser:
    """One generic parser for any ``BinaryFormat`` (module docstring)."""

    def __init__(self, fmt: BinaryFormat) -> None:
        self.format = fmt
        self._buf = bytearray()
        self.frames = 0
        self.no_reading = 0
        self.bad_frames = 0
        self.garbage = 0

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame (always below one frame)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[float]:
        """Add bytes; return the distances (metres) of the frames they completed."""
        fmt, buf = self.format, self._buf
        buf += data
        out: list[float] = []
        while buf:
            at = buf.find(fmt.header)
            if at < 0:
                # keep a tail that may be the start of a header split across reads
                keep = 0
                for n in range(min(len(fmt.header) - 1, len(buf)), 0, -1):
                    if buf.endswith(fmt.header[:n]):
                        keep = n
                        break
                self.garbage += len(buf) - keep
                del buf[: len(buf) - keep]
                break
            if at:
                self.garbage += at
                del buf[:at]
            if len(buf) < fmt.length:
                break
            frame = bytes(buf[: fmt.length])
            if not fmt.checksum(frame):
                self.bad_frames += 1
                del buf[:1]  # the header was data: look for the next one inside this frame
                continue
            del buf[: fmt.length]
            self.frames += 1
            metres = fmt.decode(frame)
            if metres is None:
                self.no_reading += 1
            else:
                out.append(metres)
        return out


class MaxbotixParser:
    """MaxBotix HRXL-MaxSonar serial output (module docstring).

    HRXL-MaxSonar-WR datasheet: "an ASCII capital 'R', followed by four ASCII character digits
    representing the range in millimeters, followed by a carriage return (ASCII 13)", 9600 baud.
    Ranges at the sensor's limits (its minimum, or its maximum when nothing echoes) are still
    readings: a far reading is an empty bay.
    """

    _FRAME = 6

    def __init__(self) -> None:
        self._buf = bytearray()
        self.frames = 0
        self.no_reading = 0
        self.bad_frames = 0
        self.garbage = 0

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame (always below one frame)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[float]:
        """Add bytes; return the distances (metres) of the frames they completed."""
        buf = self._buf
        buf += data
        out: list[float] = []
        while buf:
            at = buf.find(b"R")
            if at < 0:
                self.garbage += len(buf)
                buf.clear()
                break
            if at:
                self.garbage += at
                del buf[:at]
            body = bytes(buf[1 : self._FRAME])
            digits = body[:4]
            shape_ok = digits.isdigit() or not digits  # isdigit() is False for b""
            if len(buf) < self._FRAME:
                if shape_ok:
                    break  # a frame still arriving
            elif shape_ok and body[4] == 13:
                del buf[: self._FRAME]
                self.frames += 1
                out.append(int(digits) / 1000.0)
                continue
            self.bad_frames += 1
            del buf[:1]
        return out


FORMATS: dict[str, BinaryFormat] = {"tfmini": TFMINI, "a02yyuw": A02YYUW}


def make_parser(protocol: DistanceProtocol | str) -> BinaryFrameParser | MaxbotixParser:
    """A fresh parser for ``protocol`` (``tfmini``, ``a02yyuw`` or ``maxbotix``)."""
    if protocol == "maxbotix":
        return MaxbotixParser()
    fmt = FORMATS.get(protocol)
    if fmt is None:
        raise ValueError(f"unknown distance sensor protocol {protocol!r}")
    return BinaryFrameParser(fmt)


def default_baud(protocol: DistanceProtocol | str) -> int:
    """The rate a sensor of ``protocol`` talks at out of the box."""
    if protocol == "maxbotix":
        return 9600
    return FORMATS[protocol].baud
