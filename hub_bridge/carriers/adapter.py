"""The adapter layer: a carrier's own status feed turned into envelopes of wire contract v1.

A ``CarrierAdapter`` reads a feed (a file's text) into ``Conversion``: one ``Draft`` per usable
row, and a ``BadRow`` (where, why) for every other row; it never raises on what the feed holds.
A draft is an envelope without its ``seq``: a carrier has no device that numbers its events, so
``number`` gives each device's drafts consecutive seqs from where the hub's stored ones end
(``GET /v1/devices``: ``max_seq``), in event-time order. Ids are deterministic (``event_id``: a
UUIDv5 of carrier, tracking number, status and time), so importing the same export twice stores
nothing twice: the hub finds the ids and answers ``duplicate`` (the new seqs are accounted for,
the watermark does not stall on them).

Status vocabulary, whatever words a carrier uses (``STATUS_TYPES``, extended or overridden per
import): picked up, in transit, at a hub → ``scan``; out for delivery → ``trip.depart`` (the
parcel left the depot on a vehicle: no ``ref.stop``); arrived at the stop → ``trip.arrive``;
delivered → ``pod``; a failed attempt, a return, damage, any other exception →
``exception.{kind}``. Every event keeps the carrier's own status word in ``data.status``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_agent.wire.envelope import SEQ_MAX

__all__ = [
    "STATUS_TYPES",
    "BadRow",
    "CarrierAdapter",
    "Conversion",
    "Draft",
    "event_id",
    "normal_status",
    "number",
]

_NAMESPACE = uuid.UUID("6f1c2b1e-3d52-5a8e-9c1f-2b7a0d4e8c11")
"""The namespace of carrier event ids (fixed forever: a change would re-import everything)."""

STATUS_TYPES: dict[str, str] = {
    "CREATED": "scan",
    "PICKED_UP": "scan",
    "COLLECTED": "scan",
    "RECEIVED": "scan",
    "IN_TRANSIT": "scan",
    "ARRIVED_AT_HUB": "scan",
    "AT_HUB": "scan",
    "AT_DEPOT": "scan",
    "SORTED": "scan",
    "LOADED": "scan",
    "OUT_FOR_DELIVERY": "trip.depart",
    "ON_VEHICLE": "trip.depart",
    "ARRIVED": "trip.arrive",
    "AT_STOP": "trip.arrive",
    "DELIVERED": "pod",
    "FAILED_ATTEMPT": "exception.failed_attempt",
    "DELIVERY_FAILED": "exception.failed_attempt",
    "NOT_HOME": "exception.failed_attempt",
    "RETURNED": "exception.returned",
    "RETURN_TO_SENDER": "exception.returned",
    "DAMAGED": "exception.damaged",
    "LOST": "exception.lost",
    "EXCEPTION": "exception.carrier",
}
"""A carrier's status (normalised by ``normal_status``) → the event type it becomes."""


def normal_status(status: str) -> str:
    """``"Out for delivery"``, ``out-for-delivery`` → ``OUT_FOR_DELIVERY``."""
    return re.sub(r"[^A-Z0-9]+", "_", status.strip().upper()).strip("_")


def event_id(carrier: str, tracking: str, status: str, ts: str, extra: str = "") -> str:
    """The id of a carrier's event: the same row gives the same id, on every import."""
    key = "\x1f".join((carrier, tracking, normal_status(status), ts, extra))
    return str(uuid.uuid5(_NAMESPACE, key))


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row of the feed that is not converted: ``where`` (``line 12``, ``item 3``), why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Draft:
    """An envelope of the contract but its ``seq``; ``where`` the row it came from."""

    where: str
    envelope: dict[str, Any]

    @property
    def device(self) -> str:
        """The device the envelope is filed under."""
        return str(self.envelope["device"])


@dataclass(slots=True)
class Conversion:
    """What a feed gave: the drafts, in feed order, and the rows that could not be used."""

    drafts: list[Draft] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    rows: int = 0


class CarrierAdapter(Protocol):
    """Maps a carrier's own status feed to envelopes (for ``fleet``)."""

    name: str
    """The adapter (``generic-csv``, ``generic-json``)."""

    def convert(self, text: str, fleet: str) -> Conversion:
        """Every row of ``text`` as a draft or a ``BadRow``; never raises on its content."""
        ...


def number(drafts: Iterable[Draft], next_seq: Mapping[str, int]) -> list[dict[str, Any]]:
    """Envelopes with seqs: each device's drafts in event-time order (feed order among equal
    times) numbered from ``next_seq[device]`` (1 for a device the hub has not seen)."""
    by_device: dict[str, list[Draft]] = {}
    for d in drafts:
        by_device.setdefault(d.device, []).append(d)
    out: list[dict[str, Any]] = []
    for device, group in sorted(by_device.items()):
        seq = max(1, int(next_seq.get(device, 1)))
        # contract timestamps share one fixed layout: they sort as strings; sorted() is stable
        for d in sorted(group, key=lambda d: str(d.envelope["ts"])):
            if seq > SEQ_MAX:
                raise ValueError(f"device {device}: seqs beyond {SEQ_MAX}")
            out.append({**d.envelope, "seq": seq})
            seq += 1
    return out
