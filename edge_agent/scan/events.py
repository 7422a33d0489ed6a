"""The ``scan`` event (DESIGN §2, §4): data and ref from one read, GS1 parsed when present."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_agent.scan.gs1 import Gs1Error, is_gs1_text, parcel_ref, parse_element_string

__all__ = ["Read", "scan_event"]


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
    if read.gs1 or is_gs1_text(read.text):
        try:
            elements = parse_element_string(read.text)
        except Gs1Error as exc:
            data["gs1_error"] = str(exc)
        else:
            data["gs1"] = elements
            parcel = parcel_ref(elements)
            if parcel is not None:
                ref = {"parcel": parcel}
    if read.decode_ms is not None:
        data["decode_ms"] = round(read.decode_ms, 2)
    if read.position is not None:
        data["position"] = [list(p) for p in read.position]
    return data, ref
