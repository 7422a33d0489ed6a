"""The parcel status machine of DESIGN §9, pure: a parcel's history in, its status out.

Statuses::

    planned -> loaded -> out_for_delivery -> approaching -> arrived -> delivered
                  \\-> misloaded / missing (at the station)     \\-> failed_attempt -> returned

Each event that names a parcel (directly, or through its stop or route) becomes one history
``Entry`` with an ``action``. ``replay(entries)`` walks a parcel's history in event-time order
(``ts``, then a fixed order of actions for events of one instant, then arrival) and says for each
entry whether it moved the status, and why not when it did not: ``backwards`` (it would move the
status back: kept and flagged, not applied), ``not_on_board`` (the van moved while this parcel
was missing or on another van), ``superseded`` (a missing parcel that is misloaded elsewhere
stays misloaded). Because the walk is from the start each time, an event that arrives late or
out of order lands where its time puts it, and the same events in any order give the same
status. The rules, as ``(action, from) -> to``:

- ``verified``: planned, loaded, misloaded (a corrected misload), missing (found) -> loaded
- ``misload``: planned, loaded, misloaded, missing -> misloaded
- ``missing``: planned, loaded -> missing
- ``depart_depot``: planned, loaded -> out_for_delivery
- ``approach``: planned, loaded, out_for_delivery, failed_attempt (a second try) -> approaching
- ``arrive``: those and approaching -> arrived
- ``pod``: anything but delivered -> delivered
- ``failed`` (a PoD of kind ``none``, a device's ``exception.*``), ``depart_stop`` (leaving the
  stop without a PoD): planned .. arrived -> failed_attempt
- ``arrive_depot``: out_for_delivery .. failed_attempt -> returned
- ``scan``: history only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ACTIONS", "STATUSES", "Entry", "Step", "replay"]

STATUSES = (
    "planned",
    "loaded",
    "misloaded",
    "missing",
    "out_for_delivery",
    "approaching",
    "arrived",
    "failed_attempt",
    "delivered",
    "returned",
)

# how far along a parcel is: a move to a lower rank is backwards
_RANK = {
    "planned": 0,
    "loaded": 1,
    "misloaded": 1,
    "missing": 1,
    "out_for_delivery": 2,
    "approaching": 3,
    "arrived": 4,
    "failed_attempt": 5,
    "delivered": 6,
    "returned": 6,
}

_ON_VAN = frozenset({"planned", "loaded", "out_for_delivery", "approaching", "arrived"})

# action -> (target, statuses it applies from); the order of ACTIONS breaks ties between events
# of one instant (a scan and its PoD share a time: the PoD goes last, then the departure)
_RULES: dict[str, tuple[str | None, frozenset[str]]] = {
    "misload": ("misloaded", frozenset({"planned", "loaded", "misloaded", "missing"})),
    "verified": ("loaded", frozenset({"planned", "loaded", "misloaded", "missing"})),
    "missing": ("missing", frozenset({"planned", "loaded", "missing"})),
    "depart_depot": ("out_for_delivery", frozenset({"planned", "loaded"})),
    "approach": (
        "approaching",
        frozenset({"planned", "loaded", "out_for_delivery", "failed_attempt"}),
    ),
    "arrive": (
        "arrived",
        frozenset({"planned", "loaded", "out_for_delivery", "approaching", "failed_attempt"}),
    ),
    "scan": (None, frozenset()),
    "pod": ("delivered", frozenset(set(STATUSES) - {"delivered"})),
    "failed": ("failed_attempt", _ON_VAN),
    "depart_stop": ("failed_attempt", _ON_VAN),
    "arrive_depot": (
        "returned",
        frozenset({"out_for_delivery", "approaching", "arrived", "failed_attempt"}),
    ),
}
ACTIONS = tuple(_RULES)
# events that act on every parcel of a stop or route still in play, and leave the others be (a
# delivered parcel is not "failed" by the van leaving its stop)
_SWEEPS = frozenset({"depart_depot", "depart_stop", "arrive_depot"})
_ORDER = {a: i for i, a in enumerate(ACTIONS)}


@dataclass(frozen=True, slots=True)
class Entry:
    """One event in a parcel's history: when (``t`` epoch seconds, ``ts`` as sent), what it
    does (``action``), which event (``id``, ``type``, ``device``, ``seq``) and ``arrival`` (the
    model's count of events applied: the last tie-break)."""

    t: float
    ts: str
    action: str
    id: str
    type: str
    device: str
    seq: int
    arrival: int

    def key(self) -> tuple[float, int, int]:
        """The event-time order of a history."""
        return (self.t, _ORDER[self.action], self.arrival)

    def to_json(self) -> list[Any]:
        """A compact JSON form (a list: histories are the bulk of a model's dump)."""
        return [
            self.t,
            self.ts,
            self.action,
            self.id,
            self.type,
            self.device,
            self.seq,
            self.arrival,
        ]

    @classmethod
    def from_json(cls, v: list[Any]) -> Entry:
        """The inverse of ``to_json``."""
        t, ts, action, id_, type_, device, seq, arrival = v
        return cls(float(t), ts, action, id_, type_, device, int(seq), int(arrival))


@dataclass(frozen=True, slots=True)
class Step:
    """What one history entry did: the status it set (``applied``) or would have set (kept
    but not applied, with its ``flag``: ``backwards``, ``not_on_board``, ``superseded``); None
    for an entry that changed nothing and needs no flag (a scan, a repeat, the van leaving a
    stop whose parcel was delivered)."""

    entry: Entry
    status: str | None
    applied: bool
    flag: str | None = None


def _step(status: str, action: str) -> tuple[str, bool, str | None]:
    target, sources = _RULES[action]
    if target is None or target == status:
        return status, False, None
    if status in sources:
        return target, True, None
    if action in _SWEEPS and status not in ("misloaded", "missing"):
        return status, False, None
    if _RANK[target] < _RANK[status]:
        return status, False, "backwards"
    if status in ("misloaded", "missing"):
        return status, False, "superseded" if action == "missing" else "not_on_board"
    return status, False, None


def replay(entries: list[Entry], start: str = "planned") -> tuple[str, list[Step]]:
    """Walk ``entries`` (sorted by ``Entry.key``) from ``start``; the final status and each
    entry's ``Step``."""
    status = start
    steps = []
    for e in entries:
        status, applied, flag = _step(status, e.action)
        target = _RULES[e.action][0] if applied or flag else None
        steps.append(Step(e, target, applied, flag))
    return status, steps
