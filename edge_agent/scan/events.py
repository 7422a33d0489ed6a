"""The ``scan`` event (DESIGN §2, §4): data and ref from one read, GS1 parsed when present."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_agent.scan.gs1 import Gs1Error, bare_gs1, is_gs1_text, parcel_ref, parse_element_string

__all__ = ["Read", "read_from_scanner", "scan_event"]

# AIM symbology identifiers (ISO/IEC 15424) a scanner may put before each code: "]" + letter.
_AIM = {"C": "Code128", "d": "DataMatrix", "Q": "QRCode", "E": "EAN13", "L": "PDF417",
        "A": "Code39", "G": "Code93", "I": "ITF", "F": "Codabar", "e": "DataBar",
        "z": "Aztec", "U": "MaxiCode"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Read:
    """One code from a camera or a text scanner, before it becomes an event."""

    text: str
    symbology: str  # "Code128", "QRCode", ... ; "unknown" when a text scanner does not say
    source: str  # the camera or scanner id
    gs1: bool = False  # the decoder says the content is GS1 (FNC1 in first position)
    decode_ms: float | None = None
    position: tuple[tuple[int, int], ...] | None = None


def scan_event(read: Read) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(data, ref)`` of the scan event for ``read``.

    GS1 content gets ``gs1`` (``{AI: value}``) and ``ref.parcel`` (SSCC preferred); content
    that claims to be GS1 but does not parse keeps its text and gets ``gs1_error`` instead.
    """
    data: dict[str, Any] = {"text": read.text, "symbology": read.symbology, "source": read.source}
    ref: dict[str, Any] | None = None
    elements: dict[str, str] | None = None
    if read.gs1 or is_gs1_text(read.text):
        try:
            elements = parse_element_string(read.text)
        except Gs1Error as exc:
            data["gs1_error"] = str(exc)
    else:
        # a GS1-128 label read without its FNC1 (ZBar, many handhelds): the SSCC still names it
        elements = bare_gs1(read.text)
    if elements is not None:
        data["gs1"] = elements
        parcel = parcel_ref(elements)
        if parcel is not None:
            ref = {"parcel": parcel}
    if read.decode_ms is not None:
        data["decode_ms"] = round(read.decode_ms, 2)
    if read.position is not None:
        data["position"] = [list(p) for p in read.position]
    return data, ref


def read_from_scanner(text: str, source: str) -> Read:
    """A text scanner's code: an AIM identifier ("]C1", "]Q3", ...) in front, when the
    scanner sends one, gives the symbology and the GS1 flag and is removed from the text."""
    if len(text) > 3 and text[0] == "]" and text[1] in _AIM and text[2].isdigit():
        aim = text[:3]
        return Read(text[3:], _AIM[text[1]], source, gs1=aim in _GS1_AIM)
    return Read(text, "unknown", source)


_GS1_AIM = frozenset({"]C1", "]e0", "]d2", "]Q3", "]J1"})
