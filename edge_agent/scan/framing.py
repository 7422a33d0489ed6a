"""Sans-IO framing of text scanners: bytes in, one code per suffix, prefix stripped.

A serial or socket scanner sends each code as ``prefix + code + suffix`` (the suffix is the
scanner's terminator, typically CR or CR LF). ``CodeFramer.feed`` takes bytes as they arrive
and returns the complete codes; an over-long run without a suffix is dropped and counted.
"""

from __future__ import annotations

__all__ = ["CodeFramer"]


class CodeFramer:
    """Splits a scanner's byte stream into codes (module docstring)."""

    def __init__(self, prefix: str = "", suffix: str = "\r", max_length: int = 4096) -> None:
        if not suffix:
            raise ValueError("suffix must not be empty: it is what ends a code")
        self.prefix = prefix.encode("utf-8")
        self.suffix = suffix.encode("utf-8")
        self.max_length = max_length
        self._buf = bytearray()
        self.overlong = 0
        self.undecodable = 0
        self.empty = 0

    def feed(self, data: bytes) -> list[str]:
        """The codes completed by ``data``, in order."""
        self._buf += data
        codes = []
        while True:
            end = self._buf.find(self.suffix)
            if end < 0:
                break
            raw = bytes(self._buf[:end])
            del self._buf[: end + len(self.suffix)]
            code = self._code(raw)
            if code is not None:
                codes.append(code)
        if len(self._buf) > self.max_length + len(self.prefix):
            self.overlong += 1
            self._buf.clear()
        return codes

    def _code(self, raw: bytes) -> str | None:
        # CR LF terminators with suffix "\r": the LF starts the next frame; drop it
        raw = raw.strip(b"\n") if self.suffix == b"\r" else raw
        if self.prefix and raw.startswith(self.prefix):
            raw = raw[len(self.prefix) :]
        if len(raw) > self.max_length:
            self.overlong += 1
            return None
        if not raw:
            self.empty += 1
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.undecodable += 1
            return None
